import { compareIds } from "@sayiir/persistence-core";

/**
 * One entry of an instance index: the task it offers and the key it is ordered by (`at`): the
 * workflow's updatedAt in the ready index, the wait's timeoutAt in the timer index.
 */
export interface IndexEntry {
  at: number;
  instanceId: string;
  taskId: string;
}

/** Index order: by `at`, then by instance id in code point order. */
export function before(a: IndexEntry, b: IndexEntry): boolean {
  return a.at < b.at || (a.at === b.at && compareIds(a.instanceId, b.instanceId) < 0);
}

/**
 * Entries ordered by (at, instanceId), at most one per instance. A sorted array with binary
 * search keeps discovery proportional to the entries it reads (plus live claims it skips), never
 * to the number of stored workflows that are in neither index.
 *
 *   the ready index   tasks that can run now (a task without result, or a wait with its event
 *                     pending), by the workflow's updatedAt
 *   the timer index   waits with a timeout and no event pending, by timeoutAt: due once at <= now
 */
export class InstanceIndex {
  readonly #entries: IndexEntry[] = [];
  readonly #byInstance = new Map<string, IndexEntry>();

  #position(entry: IndexEntry): number {
    let lo = 0;
    let hi = this.#entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (before(this.#entries[mid] as IndexEntry, entry)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  set(entry: IndexEntry): void {
    this.remove(entry.instanceId);
    this.#entries.splice(this.#position(entry), 0, entry);
    this.#byInstance.set(entry.instanceId, entry);
  }

  remove(instanceId: string): void {
    const existing = this.#byInstance.get(instanceId);
    if (existing === undefined) return;
    this.#byInstance.delete(instanceId);
    const at = this.#position(existing);
    if (this.#entries[at] === existing) this.#entries.splice(at, 1);
  }

  get(instanceId: string): IndexEntry | undefined {
    return this.#byInstance.get(instanceId);
  }

  /** The entries whose key is at most `until`, in index order. */
  *upTo(until: number): IterableIterator<IndexEntry> {
    for (const entry of this.#entries) {
      if (entry.at > until) return;
      yield entry;
    }
  }

  /** Every entry, in index order. */
  *[Symbol.iterator](): IterableIterator<IndexEntry> {
    yield* this.#entries;
  }
}

/** Two index walks merged into one, in index order (each input must be in index order). */
export function* merged(a: Iterator<IndexEntry>, b: Iterator<IndexEntry>): IterableIterator<IndexEntry> {
  let x = a.next();
  let y = b.next();
  while (!x.done || !y.done) {
    if (y.done || (!x.done && before(x.value, y.value))) {
      yield x.value as IndexEntry;
      x = a.next();
    } else {
      yield y.value as IndexEntry;
      y = b.next();
    }
  }
}
