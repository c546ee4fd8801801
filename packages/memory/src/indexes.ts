import { compareIds, effectiveTime } from "@sayiir/persistence-core";

/**
 * One entry of an instance index: the task it offers, its queue and priority, and the time it is
 * ordered by (`at`): its readyAt in the ready index, the time it is due (runAt, retryAt or
 * timeoutAt) in the due index.
 */
export interface IndexEntry {
  at: number;
  instanceId: string;
  taskId: string;
  queue: string;
  priority: number;
}

/** Index order: by `at`, then by instance id in code point order. */
export function before(a: IndexEntry, b: IndexEntry): boolean {
  return a.at < b.at || (a.at === b.at && compareIds(a.instanceId, b.instanceId) < 0);
}

/**
 * Entries ordered by (at, instanceId), at most one per instance. A sorted array with binary
 * search keeps discovery proportional to the entries it reads (plus live claims it skips), never
 * to the number of stored workflows that are not in it.
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

  get size(): number {
    return this.#entries.length;
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

/**
 * An index split by queue, then by priority: one InstanceIndex per (queue, priority), each in
 * (at, instanceId) order, at most one entry per instance over all of them. Within one priority
 * the order by `at` is the order by effective time, so discovery merges the lists of the queues
 * it serves with the reading backend's agingMs and never touches another queue's entries.
 */
export class QueueIndex {
  /** Queue -> its lists, one per priority (index priority - 1). Empty queues are dropped. */
  readonly #queues = new Map<string, InstanceIndex[]>();
  readonly #byInstance = new Map<string, IndexEntry>();

  set(entry: IndexEntry): void {
    this.remove(entry.instanceId);
    let lists = this.#queues.get(entry.queue);
    if (lists === undefined) {
      lists = Array.from({ length: 5 }, () => new InstanceIndex());
      this.#queues.set(entry.queue, lists);
    }
    (lists[entry.priority - 1] as InstanceIndex).set(entry);
    this.#byInstance.set(entry.instanceId, entry);
  }

  remove(instanceId: string): void {
    const existing = this.#byInstance.get(instanceId);
    if (existing === undefined) return;
    this.#byInstance.delete(instanceId);
    const lists = this.#queues.get(existing.queue) as InstanceIndex[];
    lists[existing.priority - 1]?.remove(instanceId);
    if (lists.every((list) => list.size === 0)) this.#queues.delete(existing.queue);
  }

  get(instanceId: string): IndexEntry | undefined {
    return this.#byInstance.get(instanceId);
  }

  /** The non-empty (queue, priority) lists of these queues. */
  lists(queues: readonly string[]): InstanceIndex[] {
    return queues.flatMap((queue) => this.#queues.get(queue) ?? []).filter((list) => list.size > 0);
  }
}

/**
 * Index walks merged into one by discovery key: effectiveTime(at, priority, agingMs), then
 * instance id in code point order. Each walk must be in index order and hold one priority.
 */
export function* byEffectiveTime(
  walks: Iterator<IndexEntry>[],
  agingMs: number,
): IterableIterator<IndexEntry> {
  const key = (e: IndexEntry) => effectiveTime(e.at, e.priority, agingMs);
  const heads = walks.map((walk) => walk.next());
  for (;;) {
    let best = -1;
    for (let i = 0; i < heads.length; i++) {
      const head = heads[i] as IteratorResult<IndexEntry>;
      if (head.done) continue;
      const top = best < 0 ? undefined : (heads[best]?.value as IndexEntry);
      if (top === undefined || earlier(head.value, top, key)) best = i;
    }
    if (best < 0) return;
    yield heads[best]?.value as IndexEntry;
    heads[best] = (walks[best] as Iterator<IndexEntry>).next();
  }
}

function earlier(a: IndexEntry, b: IndexEntry, key: (e: IndexEntry) => number): boolean {
  const ka = key(a);
  const kb = key(b);
  return ka < kb || (ka === kb && compareIds(a.instanceId, b.instanceId) < 0);
}
