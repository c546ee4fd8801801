import type { BaseBackendOptions } from "@sayiir/persistence-core";
import { MemoryStore } from "./layout.js";

export interface InMemoryBackendOptions extends BaseBackendOptions {
  /** Share state with other backends (as several clients of one database would). */
  store?: MemoryStore;
  /** Milliseconds clock that judges claim expiry; Date.now by default. Ignored when `store` is given. */
  clock?: () => number;
}

/** The store a backend works on: the one given, else a new one on the given clock (Date.now by default). */
export function storeOf(options: InMemoryBackendOptions): MemoryStore {
  return options.store ?? new MemoryStore(options.clock);
}
