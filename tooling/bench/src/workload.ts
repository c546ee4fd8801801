// The snapshots the scenarios store, and pre-loading them through the adapter.
import type { PersistentBackend, TaskSchedule, WorkflowSnapshot } from "@sayiir/persistence-core";
import { forEachConcurrent } from "./util.ts";

export const DEFINITION_HASH = "bench-definition-v1";
/** The task every ready snapshot waits at. */
export const TASK_ID = "step-1";
const BASE_TIME = Date.UTC(2026, 0, 1);
const INPUT = new Uint8Array(16).fill(7);

export function readyId(prefix: string, i: number): string {
  return `${prefix}-${i}`;
}

/** InProgress at TASK_ID, not completed: a ready task. Older updatedAt for smaller i. */
export function readySnapshot(instanceId: string, i: number, schedule: TaskSchedule = {}): WorkflowSnapshot {
  return {
    instanceId,
    definitionHash: DEFINITION_HASH,
    state: {
      kind: "InProgress",
      position: { kind: "AtTask", taskId: TASK_ID, ...schedule },
      completedTasks: {},
      lastCompletedTaskId: null,
    },
    createdAt: BASE_TIME + i,
    updatedAt: BASE_TIME + i,
    initialInput: INPUT,
  };
}

/**
 * A snapshot that holds no ready task. Rotates through the shapes a real store accumulates:
 * finished workflows (Completed, Failed), not started, and one waiting at a task already completed.
 */
export function nonReadySnapshot(instanceId: string, i: number): WorkflowSnapshot {
  const t = BASE_TIME + i;
  const base = { instanceId, definitionHash: DEFINITION_HASH, createdAt: t, updatedAt: t };
  switch (i % 4) {
    case 0:
      return { ...base, state: { kind: "Completed", finalOutput: INPUT } };
    case 1:
      return { ...base, state: { kind: "Failed", error: "boom" } };
    case 2:
      return {
        ...base,
        state: {
          kind: "InProgress",
          position: { kind: "NotStarted" },
          completedTasks: {},
          lastCompletedTaskId: null,
        },
      };
    default:
      return {
        ...base,
        state: {
          kind: "InProgress",
          position: { kind: "AtTask", taskId: TASK_ID },
          completedTasks: { [TASK_ID]: { taskId: TASK_ID, output: INPUT } },
          lastCompletedTaskId: TASK_ID,
        },
      };
  }
}

/** Far in the future (2100): a task scheduled there is never due while the bench runs. */
const FAR_FUTURE = Date.UTC(2100, 0, 1);
/** The queue the other-queue shape fills; the measured workers serve "default" only. */
export const OTHER_QUEUE = "bench-other";

/** A task that is ready in every respect but its time: AtTask with runAt in 2100 (a durable sleep). */
export function futureSnapshot(instanceId: string, i: number): WorkflowSnapshot {
  return readySnapshot(instanceId, i, { runAt: FAR_FUTURE + i });
}

/** A ready task in another queue than the one the measured worker serves. */
export function otherQueueSnapshot(instanceId: string, i: number): WorkflowSnapshot {
  return readySnapshot(instanceId, i, { queue: OTHER_QUEUE });
}

/** A snapshot of about `bytes` bytes: InProgress at step-2, with step-1's output holding the payload. */
export function payloadSnapshot(instanceId: string, bytes: number): WorkflowSnapshot {
  const output = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) output[i] = (i * 31 + 7) & 0xff;
  return {
    instanceId,
    definitionHash: DEFINITION_HASH,
    state: {
      kind: "InProgress",
      position: { kind: "AtTask", taskId: "step-2" },
      completedTasks: { [TASK_ID]: { taskId: TASK_ID, output } },
      lastCompletedTaskId: TASK_ID,
    },
    createdAt: BASE_TIME,
    updatedAt: BASE_TIME,
  };
}

export interface PreloadResult {
  count: number;
  ms: number;
  perSecond: number;
}

/** Saves `count` snapshots through the adapter with `concurrency` saves in flight. */
export async function preload(
  backend: PersistentBackend,
  count: number,
  make: (i: number) => WorkflowSnapshot,
  concurrency: number,
  offset = 0,
): Promise<PreloadResult> {
  const t0 = performance.now();
  await forEachConcurrent(count, concurrency, (i) => backend.saveSnapshot(make(offset + i)));
  const ms = performance.now() - t0;
  return { count, ms: Math.round(ms), perSecond: Math.round((count / ms) * 1000) };
}
