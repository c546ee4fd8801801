/**
 * The finish-time index of purgeFinished: every Completed, Failed or Cancelled instance by
 * (finishedAt, instance id), kept sorted, so a purge reads the oldest finishes first and never
 * looks at an unfinished workflow. An instance keeps the time it first finished.
 */
export class FinishIndex {
  /** Sorted by time, then id. */
  readonly #entries: Array<{ at: number; instanceId: string }> = [];
  readonly #at = new Map<string, number>();

  /** When the instance finished, or undefined while it is unfinished (or unknown). */
  finishedAt(instanceId: string): number | undefined {
    return this.#at.get(instanceId);
  }

  /** Records a finish at `at` unless the instance is already recorded (it keeps its first time). */
  add(instanceId: string, at: number): void {
    if (this.#at.has(instanceId)) return;
    this.#at.set(instanceId, at);
    this.#entries.splice(this.#position(at, instanceId), 0, { at, instanceId });
  }

  remove(instanceId: string): void {
    const at = this.#at.get(instanceId);
    if (at === undefined) return;
    this.#at.delete(instanceId);
    this.#entries.splice(this.#position(at, instanceId), 1);
  }

  /** Up to `limit` instance ids that finished before `before`, oldest first. */
  before(before: number, limit: number): string[] {
    const ids: string[] = [];
    for (const entry of this.#entries) {
      if (entry.at >= before || ids.length === limit) break;
      ids.push(entry.instanceId);
    }
    return ids;
  }

  /** Where (at, id) is or would go: a binary search over the sorted entries. */
  #position(at: number, instanceId: string): number {
    let low = 0;
    let high = this.#entries.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      const entry = this.#entries[mid] as { at: number; instanceId: string };
      if (entry.at < at || (entry.at === at && entry.instanceId < instanceId)) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}
