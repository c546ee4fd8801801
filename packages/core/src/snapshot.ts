import { EMPTY_BYTES, toBytes } from "./bytes.js";

/** Where an in-progress workflow stands. */
export type ExecutionPosition =
  | { kind: "NotStarted" }
  | { kind: "AtTask"; taskId: string }
  | { kind: "AtFork"; branchId: string; completedBranches: string[] }
  | { kind: "AtJoin"; joinId: string; completedBranches: string[] };

/** The output of one completed task. */
export interface TaskResult {
  taskId: string;
  output: Uint8Array;
}

export type WorkflowState =
  | {
      kind: "InProgress";
      position: ExecutionPosition;
      /** Completed tasks by task id. Map order is not resume order: see lastCompletedTaskId. */
      completedTasks: Record<string, TaskResult>;
      lastCompletedTaskId: string | null;
    }
  | { kind: "Completed"; finalOutput: Uint8Array }
  | { kind: "Failed"; error: string };

/** A checkpoint of one workflow instance. Timestamps are epoch milliseconds. */
export interface WorkflowSnapshot {
  instanceId: string;
  definitionHash: string;
  state: WorkflowState;
  createdAt: number;
  updatedAt: number;
  initialInput?: Uint8Array;
}

export type InProgressState = Extract<WorkflowState, { kind: "InProgress" }>;

export function isFinished(state: WorkflowState): boolean {
  return state.kind === "Completed" || state.kind === "Failed";
}

// Helpers are pure: they return a new snapshot and never mutate their argument, so a caller
// can keep the previous version around (for example to retry a failed save).

export function createSnapshot(
  instanceId: string,
  definitionHash: string,
  options: { initialInput?: Uint8Array; now?: number } = {},
): WorkflowSnapshot {
  const now = options.now ?? Date.now();
  const snapshot: WorkflowSnapshot = {
    instanceId,
    definitionHash,
    state: {
      kind: "InProgress",
      position: { kind: "NotStarted" },
      completedTasks: {},
      lastCompletedTaskId: null,
    },
    createdAt: now,
    updatedAt: now,
  };
  if (options.initialInput !== undefined) snapshot.initialInput = toBytes(options.initialInput);
  return snapshot;
}

function inProgress(snapshot: WorkflowSnapshot, operation: string): InProgressState {
  if (snapshot.state.kind !== "InProgress") {
    throw new TypeError(
      `${operation}: workflow ${snapshot.instanceId} is ${snapshot.state.kind}, not InProgress`,
    );
  }
  return snapshot.state;
}

export function markTaskCompleted(
  snapshot: WorkflowSnapshot,
  taskId: string,
  output: Uint8Array,
  now: number = Date.now(),
): WorkflowSnapshot {
  const state = inProgress(snapshot, "markTaskCompleted");
  return {
    ...snapshot,
    updatedAt: now,
    state: {
      ...state,
      completedTasks: { ...state.completedTasks, [taskId]: { taskId, output: toBytes(output) } },
      lastCompletedTaskId: taskId,
    },
  };
}

export function updatePosition(
  snapshot: WorkflowSnapshot,
  position: ExecutionPosition,
  now: number = Date.now(),
): WorkflowSnapshot {
  const state = inProgress(snapshot, "updatePosition");
  return { ...snapshot, updatedAt: now, state: { ...state, position } };
}

export function markCompleted(
  snapshot: WorkflowSnapshot,
  finalOutput: Uint8Array,
  now: number = Date.now(),
): WorkflowSnapshot {
  return { ...snapshot, updatedAt: now, state: { kind: "Completed", finalOutput: toBytes(finalOutput) } };
}

export function markFailed(
  snapshot: WorkflowSnapshot,
  error: string,
  now: number = Date.now(),
): WorkflowSnapshot {
  return { ...snapshot, updatedAt: now, state: { kind: "Failed", error } };
}

/** The stored output of a task, or undefined if it has not completed (or the workflow is finished). */
export function getTaskResult(snapshot: WorkflowSnapshot, taskId: string): Uint8Array | undefined {
  if (snapshot.state.kind !== "InProgress") return undefined;
  return Object.hasOwn(snapshot.state.completedTasks, taskId)
    ? snapshot.state.completedTasks[taskId]?.output
    : undefined;
}

/** The output of the last completed task, if any. */
export function getLastTaskOutput(snapshot: WorkflowSnapshot): Uint8Array | undefined {
  const state = snapshot.state;
  if (state.kind !== "InProgress" || state.lastCompletedTaskId === null) return undefined;
  return getTaskResult(snapshot, state.lastCompletedTaskId);
}

/**
 * The input a worker gets for the next task: the last completed task's output, else the
 * workflow's initial input, else empty bytes.
 */
export function nextTaskInput(snapshot: WorkflowSnapshot): Uint8Array {
  return getLastTaskOutput(snapshot) ?? snapshot.initialInput ?? EMPTY_BYTES;
}

/** The task id a worker could run now, if the snapshot is InProgress at a task not yet completed. */
export function readyTaskId(snapshot: WorkflowSnapshot): string | undefined {
  const state = snapshot.state;
  if (state.kind !== "InProgress" || state.position.kind !== "AtTask") return undefined;
  const taskId = state.position.taskId;
  return Object.hasOwn(state.completedTasks, taskId) ? undefined : taskId;
}

/**
 * Adds an entry to a completedTasks record as an own property. Plain assignment would treat a
 * task id of "__proto__" as the prototype setter and silently drop the result.
 */
export function setCompletedTask(tasks: Record<string, TaskResult>, result: TaskResult): void {
  Object.defineProperty(tasks, result.taskId, {
    value: result,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}
