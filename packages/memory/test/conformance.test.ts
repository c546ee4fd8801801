import { runConformance } from "@sayiir/persistence-core/conformance";
import { InMemoryBackend } from "../src/index.js";

runConformance({
  name: "memory",
  capabilities: { durable: false, rawRecords: true },
  setup: async ({ maxPayloadBytes }) => {
    const backend = new InMemoryBackend({ maxPayloadBytes });
    return {
      backend,
      connect: async () => backend.connect(),
      corruptSnapshot: async (instanceId) => {
        const stored = backend.store.instances.get(instanceId);
        if (stored) stored.header = new TextEncoder().encode("not a snapshot");
      },
    };
  },
});
