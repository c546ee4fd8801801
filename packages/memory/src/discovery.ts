import { type AvailableTask, copyBytes, EMPTY_BYTES, isClaimLive } from "@sayiir/persistence-core";
import { type IndexEntry, merged } from "./indexes.js";
import type { MemoryStore, StoredInstance } from "./layout.js";

/*
 * Where an instance is indexed, and what discovery hands out. An InProgress workflow is in:
 *   the ready index   at a task that has no result yet, or waiting for an event that is pending
 *                     (key: its updatedAt)
 *   the timer index   waiting, with a timeout and no event pending (key: its timeoutAt)
 *   neither           otherwise, and always when Paused, Cancelled, Completed or Failed.
 * Every write that can change this calls `place`, so discovery reads the indexes and never scans.
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

/** Puts the instance into the index it belongs in now (ready, timers or neither). */
export function place(store: MemoryStore, instanceId: string, stored: StoredInstance): void {
  const wait = openWait(stored);
  const eventPending = wait !== null && store.events.oldest(instanceId, wait.eventName) !== undefined;
  const taskId = readyTask(stored) ?? (eventPending ? wait.nextTaskId : null);
  if (taskId !== null) {
    store.ready.set({ at: stored.updatedAt, instanceId, taskId });
  } else {
    store.ready.remove(instanceId);
  }
  if (wait !== null && !eventPending && wait.timeoutAt !== null) {
    store.timers.set({ at: wait.timeoutAt, instanceId, taskId: wait.nextTaskId });
  } else {
    store.timers.remove(instanceId);
  }
}

/** Takes the instance out of both indexes. */
export function unplace(store: MemoryStore, instanceId: string): void {
  store.ready.remove(instanceId);
  store.timers.remove(instanceId);
}

/**
 * Up to `limit` tasks nobody holds a live claim on: the ready index and the timer index up to
 * `now`, merged in index order (ready by updatedAt, due waits by timeoutAt, ties by instance id).
 */
export function availableTasks(store: MemoryStore, now: number, limit: number): AvailableTask[] {
  const found: AvailableTask[] = [];
  const due = merged(store.ready[Symbol.iterator](), store.timers.upTo(now));
  for (const entry of due) {
    if (found.length >= limit) break;
    const claim = store.claim(entry.instanceId, entry.taskId);
    if (claim !== undefined && isClaimLive(claim, now)) continue;
    found.push(availableTask(store, entry));
  }
  return found;
}

/**
 * One indexed task as a worker gets it. After a wait: the oldest pending event of its name (its
 * payload is the input), or, with none pending, timed out with empty input. Otherwise the input
 * is the last completed output, else the initial input, else empty bytes.
 */
function availableTask(store: MemoryStore, { instanceId, taskId }: IndexEntry): AvailableTask {
  const stored = store.instances.get(instanceId) as StoredInstance;
  const task = { instanceId, taskId, workflowDefinitionHash: stored.definitionHash };
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
