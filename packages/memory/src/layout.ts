import type { TaskAttempts, TaskClaim } from "@sayiir/persistence-core";
import type { StoredSnapshot, StoredStatus } from "@sayiir/persistence-core/adapter";
import { EventQueues } from "./events.js";
import { QueueIndex } from "./indexes.js";
import { FinishIndex } from "./retention.js";

/*
 * What the memory backend keeps, the in-memory counterpart of a database's tables:
 *
 *   instances   instance id -> StoredInstance: the stored form of its snapshot (toStoredSnapshot)
 *   claims      instance id -> task id -> TaskClaim (nested maps: no pair of ids shares a key)
 *   events      instance id -> event name -> its pending events, oldest first, and the instance's
 *               event counter (src/events.ts)
 *   ready       the ready index: one entry per instance whose task may run now (a task without
 *               result and without runAt or retryAt, or a wait whose event is pending), by
 *               (readyAt = updatedAt, instance id), in one list per queue and priority
 *   due         the due index: one entry per task that must not run before a time (its runAt, its
 *               retryAt, or a wait's timeoutAt with no event pending), by (that time, instance
 *               id), in one list per queue and priority; discovery reads it up to now
 *   finished    the finish-time index: every finished instance by (first finish time, id), for
 *               purgeFinished (src/retention.ts)
 *   lastToken   the fencing-token counter of the whole store
 *
 * An instance is in at most one of the two indexes. A Paused, Cancelled, Completed or Failed
 * workflow is in neither, nor is a task held after a failure that was not rescheduled.
 *
 * Every byte value is a private copy, so a caller changing its bytes after a save, or the bytes it
 * loaded, cannot reach the store.
 */

/** What the memory backend keeps of one workflow instance (the fields of toStoredSnapshot). */
export interface StoredInstance {
  /** toStoredSnapshot's header: everything but the task results and the initial input. */
  header: Uint8Array;
  /** InProgress, Paused, Cancelled, Completed or Failed. */
  status: StoredStatus;
  /** Completed, Failed or Cancelled: terminal. */
  finished: boolean;
  definitionHash: string;
  /** The initial input, stored once, beside the header; undefined when the snapshot has none. */
  initialInput: Uint8Array | undefined;
  /** The task of an InProgress AtTask position, else null. */
  positionTaskId: string | null;
  /** The wait of an InProgress AwaitingEvent position whose next task had no result when written, else null. */
  awaiting: StoredSnapshot["awaiting"];
  /** Task id -> output. */
  results: Map<string, Uint8Array>;
  /** The ready or awaited task's schedule, defaults filled in (toStoredSnapshot's `schedule`). */
  schedule: StoredSnapshot["schedule"];
  /** Task id -> its failed runs, beside the header: failTasks and takeovers change them alone. */
  attempts: Map<string, TaskAttempts>;
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
  readonly events = new EventQueues();
  readonly ready = new QueueIndex();
  readonly due = new QueueIndex();
  readonly finished = new FinishIndex();
  /** One counter for the whole store: tokens never repeat, even across deleted instances. */
  lastToken = 0;
  /** The waitForTasks listeners of the backends over this store (one per backend that waits). */
  readonly wakeListeners = new Set<(queue: string, readyNow: boolean) => void>();
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

  /** The stored claim on one task (live or not), or undefined. */
  claim(instanceId: string, taskId: string): TaskClaim | undefined {
    return this.claims.get(instanceId)?.get(taskId);
  }

  setClaim(claim: TaskClaim): void {
    let tasks = this.claims.get(claim.instanceId);
    if (tasks === undefined) {
      tasks = new Map();
      this.claims.set(claim.instanceId, tasks);
    }
    tasks.set(claim.taskId, claim);
  }

  deleteClaim(instanceId: string, taskId: string): void {
    const tasks = this.claims.get(instanceId);
    tasks?.delete(taskId);
    if (tasks?.size === 0) this.claims.delete(instanceId);
    // A released claim may leave its indexed task free to claim again.
    const ready = this.ready.get(instanceId);
    const indexed = ready ?? this.due.get(instanceId);
    if (indexed !== undefined) this.wake(indexed.queue, ready !== undefined);
  }

  /** Tells the waiters of `queue` that a task of it is ready (`readyNow`) or due at another time. */
  wake(queue: string, readyNow: boolean): void {
    for (const listener of this.wakeListeners) listener(queue, readyNow);
  }
}
