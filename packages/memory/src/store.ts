import type { TaskClaim } from "@sayiir/persistence-core";
import { ReadyIndex } from "./ready-index.js";

/** What the memory backend keeps of one workflow instance. */
export interface StoredInstance {
  /** encodeSnapshotHeader output: everything but the task results. */
  header: Uint8Array;
  finished: boolean;
  definitionHash: string;
  initialInput: Uint8Array | undefined;
  /** The task of an AtTask position, else null. */
  positionTaskId: string | null;
  results: Map<string, Uint8Array>;
  lastCompletedTaskId: string | null;
  updatedAt: number;
}

/**
 * The shared state behind one or more InMemoryBackend instances. Two backends over one store
 * behave like two clients of one database, which is how the conformance kit tests concurrency.
 */
export class MemoryStore {
  readonly instances = new Map<string, StoredInstance>();
  /** Claims by instance, then task: nested maps so no pair of ids can ever share a key. */
  readonly claims = new Map<string, Map<string, TaskClaim>>();
  readonly ready = new ReadyIndex();
  /** One counter for the whole store: tokens never repeat, even across deleted instances. */
  lastToken = 0;
  #sortedIds: string[] | null = null;

  constructor(readonly clock: () => number = Date.now) {}

  idsChanged(): void {
    this.#sortedIds = null;
  }

  /** Instance ids in code-unit order, sorted lazily once per change. */
  sortedIds(): string[] {
    this.#sortedIds ??= [...this.instances.keys()].sort();
    return this.#sortedIds;
  }
}
