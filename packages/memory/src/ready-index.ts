import { compareIds } from "@sayiir/persistence-core";

/** One ready task: its workflow is InProgress at this task, which has no result yet. */
export interface ReadyEntry {
  updatedAt: number;
  instanceId: string;
  taskId: string;
}

function before(a: ReadyEntry, b: ReadyEntry): boolean {
  return (
    a.updatedAt < b.updatedAt || (a.updatedAt === b.updatedAt && compareIds(a.instanceId, b.instanceId) < 0)
  );
}

/**
 * Ready tasks ordered by (updatedAt, instanceId): at most one per instance. A sorted array with
 * binary search keeps discovery proportional to the tasks it returns (plus live claims it skips),
 * never to the number of stored workflows that are not ready.
 */
export class ReadyIndex {
  readonly #entries: ReadyEntry[] = [];
  readonly #byInstance = new Map<string, ReadyEntry>();

  #position(entry: ReadyEntry): number {
    let lo = 0;
    let hi = this.#entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (before(this.#entries[mid] as ReadyEntry, entry)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  set(entry: ReadyEntry): void {
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

  get(instanceId: string): ReadyEntry | undefined {
    return this.#byInstance.get(instanceId);
  }

  /** Oldest first. */
  *[Symbol.iterator](): IterableIterator<ReadyEntry> {
    yield* this.#entries;
  }
}
