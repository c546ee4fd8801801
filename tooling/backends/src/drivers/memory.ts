// The in-memory reference: one store in this process, every client a connect() over it. It cannot
// be opened from another process.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { CORRUPT_HEADER, type Driver } from "../driver.ts";

/** What the registry uses of InMemoryBackend beyond the contract. */
interface MemoryLike extends PersistentBackend {
  connect(options: { maxPayloadBytes?: number }): PersistentBackend;
  store: { instances: Map<string, { header: Uint8Array }> };
}

const config = { backend: "memory", url: null, storage: "memory" } as const;

export const memory: Driver = {
  name: "memory",
  server: null,
  specifier: "@sayiir/persistence-memory",
  className: "InMemoryBackend",
  async place() {
    return { ...config };
  },
  options(_config, client) {
    return { maxPayloadBytes: client.maxPayloadBytes };
  },
  async drop() {},
  subject(Adapter, client) {
    const backend = new Adapter({ maxPayloadBytes: client.maxPayloadBytes }) as MemoryLike;
    return {
      name: "memory",
      backend,
      storage: config.storage,
      config: { ...config },
      connect: async (o = {}) => backend.connect({ maxPayloadBytes: o.maxPayloadBytes }),
      corrupt: async (id) => {
        const stored = backend.store.instances.get(id);
        if (stored) stored.header = CORRUPT_HEADER.slice();
      },
      cleanup: async () => {},
    };
  },
};
