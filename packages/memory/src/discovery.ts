import { type AvailableTask, copyBytes, EMPTY_BYTES, isClaimLive } from "@sayiir/persistence-core";
import { byEffectiveTime, type IndexEntry } from "./indexes.js";
import type { MemoryStore, StoredInstance } from "./layout.js";

/*
 * Where an instance is indexed, and what discovery hands out. An InProgress workflow's task (an
 * AtTask task without result, or the task after an open wait) is in:
 *   the ready index   when it may run at once: no runAt and no retryAt, or a wait whose event is
 *                     pending (readyAt: the workflow's updatedAt)
 *   the due index     when it must not run before a time: its runAt, its retryAt after a failure
 *                     (the later of the two), or a wait's timeoutAt with no event pending
 *   neither           a wait with no event and no timeout, a task held after a failure with
 *                     retryAt null, and always when Paused, Cancelled, Completed or Failed.
 * Both indexes keep one list per (queue, priority). Every write that can change this calls `place`,
 * so discovery reads the indexes of the queues it serves and never scans.
 */

/** The task of an AtTask position, unless it has a result (claims aside), else null. */
export function readyTask(stored: StoredInstance): string | null {
  const taskId = stored.positionTaskId;
  return taskId !== null && !stored.results.has(taskId) ? taskId : null;
}

/** The wait of an AwaitingEvent position, unless its next task has a result since, else null. */
export function openWait(stored: StoredInstance): StoredInstance["awaiting"] {
  const wait = stored.awaiting;
  return wait !== null && !stored.results.has(wait.nextTaskId) ? wait : null;
}

/** The task the position offers (an AtTask task or the task after an open wait), else null. */
export function positionTask(stored: StoredInstance): string | null {
  return readyTask(stored) ?? openWait(stored)?.nextTaskId ?? null;
}

/** Where the position's task stands: its task, and since when it is ready or when it is due. */
type Readiness = { taskId: string } & ({ readyAt: number } | { dueAt: number });

/** The contract's readyAt rules; null when the task is in no index. */
function readiness(store: MemoryStore, instanceId: string, stored: StoredInstance): Readiness | null {
  const taskId = positionTask(stored);
  if (taskId === null) return null;
  const retryAt = stored.attempts.get(taskId)?.retryAt;
  if (retryAt === null) return null; // failed and not rescheduled: held
  const wait = openWait(stored);
  let notBefore: number | null;
  if (wait === null) notBefore = stored.schedule.runAt;
  else if (store.events.oldest(instanceId, wait.eventName) !== undefined) notBefore = null;
  else if (wait.timeoutAt !== null) notBefore = wait.timeoutAt;
  else return null; // waiting for an event, with no timeout
  if (retryAt !== undefined) notBefore = Math.max(notBefore ?? retryAt, retryAt);
  return notBefore === null ? { taskId, readyAt: stored.updatedAt } : { taskId, dueAt: notBefore };
}

/** Puts the instance into the index it belongs in now (ready, due or neither). */
export function place(store: MemoryStore, instanceId: string, stored: StoredInstance): void {
  const ready = readiness(store, instanceId, stored);
  const { priority, queue } = stored.schedule;
  if (ready !== null && "readyAt" in ready) {
    store.ready.set({ at: ready.readyAt, instanceId, taskId: ready.taskId, queue, priority });
  } else {
    store.ready.remove(instanceId);
  }
  if (ready !== null && "dueAt" in ready) {
    store.due.set({ at: ready.dueAt, instanceId, taskId: ready.taskId, queue, priority });
  } else {
    store.due.remove(instanceId);
  }
  // Ready now, or due at a time a waiter may not know yet: its waiters look again.
  if (ready !== null) store.wake(queue, "readyAt" in ready);
}

/**
 * What waitForTasks needs to know of these queues: whether a task is claimable now, and the
 * earliest future moment one comes due by time alone (a due entry's time, or the expiry of a live
 * claim on an indexed task).
 */
export function wakeProbe(
  store: MemoryStore,
  queues: readonly string[],
  { now, agingMs }: { now: number; agingMs: number },
): { ready: boolean; nextDueAt: number | null } {
  if (availableEntries(store, queues, { now, agingMs, limit: 1 }).length > 0) {
    return { ready: true, nextDueAt: null };
  }
  let nextDueAt = Number.POSITIVE_INFINITY;
  for (const list of store.due.lists(queues)) {
    for (const entry of list) {
      if (entry.at > now) {
        nextDueAt = Math.min(nextDueAt, entry.at);
        break;
      }
    }
  }
  const served = new Set(queues);
  for (const [instanceId, tasks] of store.claims) {
    const entry = store.ready.get(instanceId) ?? store.due.get(instanceId);
    if (entry === undefined || !served.has(entry.queue)) continue;
    const expiresAt = tasks.get(entry.taskId)?.expiresAt;
    if (expiresAt !== undefined && expiresAt !== null && expiresAt > now) {
      nextDueAt = Math.min(nextDueAt, Math.max(expiresAt, entry.at));
    }
  }
  return { ready: false, nextDueAt: Number.isFinite(nextDueAt) ? nextDueAt : null };
}

/** Takes the instance out of both indexes. */
export function unplace(store: MemoryStore, instanceId: string): void {
  store.ready.remove(instanceId);
  store.due.remove(instanceId);
}

/**
 * Up to `limit` index entries of the queues served whose task nobody holds a live claim on: the
 * ready index and the due index up to `now`, merged by effectiveTime(at, priority, agingMs), ties
 * by instance id in code point order.
 */
export function availableEntries(
  store: MemoryStore,
  queues: readonly string[],
  { now, agingMs, limit }: { now: number; agingMs: number; limit: number },
): IndexEntry[] {
  const walks = [
    ...store.ready.lists(queues).map((list) => list[Symbol.iterator]()),
    ...store.due.lists(queues).map((list) => list.upTo(now)),
  ];
  const found: IndexEntry[] = [];
  for (const entry of byEffectiveTime(walks, agingMs)) {
    if (found.length >= limit) break;
    const claim = store.claim(entry.instanceId, entry.taskId);
    if (claim !== undefined && isClaimLive(claim, now)) continue;
    found.push(entry);
  }
  return found;
}

/**
 * One indexed task as a worker gets it, with its attempt (failed runs + 1), priority and queue.
 * After a wait: the oldest pending event of its name (its payload is the input), or, with none
 * pending, timed out with empty input. Otherwise the input is the last completed output, else
 * the initial input, else empty bytes.
 */
export function availableTask(store: MemoryStore, entry: IndexEntry): AvailableTask {
  const { instanceId, taskId, priority, queue } = entry;
  const stored = store.instances.get(instanceId) as StoredInstance;
  const attempt = (stored.attempts.get(taskId)?.count ?? 0) + 1;
  const task = {
    instanceId,
    taskId,
    workflowDefinitionHash: stored.definitionHash,
    attempt,
    priority,
    queue,
  };
  const wait = openWait(stored);
  if (wait === null) return { ...task, input: input(stored) };
  const event = store.events.oldest(instanceId, wait.eventName);
  if (event === undefined) return { ...task, input: new Uint8Array(0), timedOut: true };
  const { eventName, sequence } = event;
  return { ...task, input: copyBytes(event.payload), event: { eventName, sequence } };
}

/** Input of a ready task: the last completed output, else the initial input, else empty bytes. */
function input(stored: StoredInstance): Uint8Array {
  const last =
    stored.lastCompletedTaskId === null ? undefined : stored.results.get(stored.lastCompletedTaskId);
  return copyBytes(last ?? stored.initialInput ?? EMPTY_BYTES);
}
