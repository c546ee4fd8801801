// The batch committer: the steps a worker finishes at about the same time share one completeTasks
// call (like River's batch completer and graphile-worker's batched completions). A step waits for
// at most the call in flight: the first one after an idle period is sent on the next turn of the
// event loop, and the ones that finish while a call is in flight go together in the next call.
import type { CompletionOutcome, PersistentBackend, TaskCompletion } from "@sayiir/persistence-core";

/** The most items in one call (well under the contract's 10,000 per call). */
const MAX_BATCH = 256;

interface Pending {
  item: TaskCompletion;
  resolve: (outcome: CompletionOutcome) => void;
  reject: (error: unknown) => void;
}

export class Committer {
  readonly #backend: PersistentBackend;
  #pending: Pending[] = [];
  #flushing = false;
  /** completeTasks calls made, and items sent (for tests and stats). */
  calls = 0;
  items = 0;

  constructor(backend: PersistentBackend) {
    this.#backend = backend;
  }

  /** Sends `item` in the next call; resolves with its own outcome (a BackendError rejects every item of that call). */
  commit(item: TaskCompletion): Promise<CompletionOutcome> {
    return new Promise<CompletionOutcome>((resolve, reject) => {
      this.#pending.push({ item, resolve, reject });
      if (!this.#flushing) {
        this.#flushing = true;
        setImmediate(() => void this.#flush());
      }
    });
  }

  async #flush(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, MAX_BATCH);
      this.calls++;
      this.items += batch.length;
      try {
        const outcomes = await this.#backend.completeTasks(batch.map((p) => p.item));
        batch.forEach((p, i) => {
          p.resolve(outcomes[i] ?? null);
        });
      } catch (error) {
        for (const p of batch) p.reject(error);
      }
    }
    this.#flushing = false;
  }
}
