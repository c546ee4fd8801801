/**
 * The seed's quick start: save a workflow snapshot and load it back.
 * Run: pnpm --filter @sayiir/examples quickstart
 */
import { createSnapshot } from "@sayiir/persistence-core";
import { InMemoryBackend } from "@sayiir/persistence-memory";

const backend = new InMemoryBackend();

// Create and save a snapshot
const snapshot = createSnapshot("instance-123", "workflow-hash");
await backend.saveSnapshot(snapshot);

// Load it back
const loaded = await backend.loadSnapshot("instance-123");
console.log(`Loaded workflow: ${loaded.instanceId}`);

await backend.close();
