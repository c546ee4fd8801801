export { InMemoryBackend } from "./backend.js";
export type { IndexEntry, QueueIndex } from "./indexes.js";
export { MemoryStore, type StoredInstance } from "./layout.js";
export type { InMemoryBackendOptions } from "./options.js";
