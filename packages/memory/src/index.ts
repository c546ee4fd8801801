export { InMemoryBackend } from "./backend.js";
export { MemoryStore, type StoredInstance } from "./layout.js";
export type { InMemoryBackendOptions } from "./options.js";
