export { InMemoryBackend, type InMemoryBackendOptions } from "./memory-backend.js";
export { MemoryStore, type StoredInstance } from "./store.js";
