import { EMPTY_BYTES, toBytes } from "./bytes.js";

/**
 * How the task a position makes ready is scheduled. Every field is optional: absent, a task runs
 * as soon as it is ready (runAt), at priority 3 (1 first .. 5 last) in the queue "default".
 */
export interface TaskSchedule {
  /** Epoch ms: the task is never handed out before this time by the store's clock (a durable sleep). */
  runAt?: number;
  /** 1 (first) to 5 (last); a waiting task gains one level per `agingMs` (a backend option). */
  priority?: number;
  /** Only workers that serve this queue get the task (validated like an id). */
  queue?: string;
}

export const DEFAULT_PRIORITY = 3;
export const DEFAULT_QUEUE = "default";
export const DEFAULT_AGING_MS = 60_000;

/** Where an in-progress workflow stands. */
export type ExecutionPosition =
  | { kind: "NotStarted" }
  | ({ kind: "AtTask"; taskId: string } & TaskSchedule)
  | { kind: "AtFork"; branchId: string; completedBranches: string[] }
  | { kind: "AtJoin"; joinId: string; completedBranches: string[] }
  /**
   * Waiting for an external event: `nextTaskId` becomes ready as soon as an event named
   * `eventName` is pending (its input is the oldest such event's payload), or, with none, once
   * `timeoutAt` (epoch ms, by the store's clock) has passed (its input is then empty).
   */
  | ({ kind: "AwaitingEvent"; eventName: string; nextTaskId: string; timeoutAt: number | null } & Omit<
      TaskSchedule,
      "runAt"
    >);

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
  | { kind: "Failed"; error: string }
  /**
   * Stopped from outside (cancelWorkflow): terminal like Completed and Failed. Keeps the results
   * that had landed and the task that was running or ready when it was cancelled.
   */
  | {
      kind: "Cancelled";
      reason: string | null;
      requestedBy: string | null;
      cancelledAt: number;
      completedTasks: Record<string, TaskResult>;
      interruptedAtTaskId: string | null;
    }
  /**
   * Held from outside (pauseWorkflow): nothing moves it on and discovery skips it until
   * resumeWorkflow puts it back InProgress at the same position. Running tasks may still record
   * their results.
   */
  | {
      kind: "Paused";
      reason: string | null;
      requestedBy: string | null;
      pausedAt: number;
      position: ExecutionPosition;
      completedTasks: Record<string, TaskResult>;
      lastCompletedTaskId: string | null;
    };

/**
 * The failed runs of one task, recorded by failTasks (and by a takeover of an expired claim).
 * `attempt` on an available task is `count + 1`.
 */
export interface TaskAttempts {
  /** Runs of the task that ended without a result: failures and takeovers after a lease expired. */
  count: number;
  /** The error text of the last failure (null after a takeover only). */
  lastError: string | null;
  /** When the last failure was recorded (epoch ms, the store's clock). */
  lastFailedAt: number | null;
  /**
   * When the task may run again after its last failure (epoch ms); null: not rescheduled (the
   * task is held until a saveSnapshot moves the workflow); absent: no constraint.
   */
  retryAt?: number | null;
}

/** A checkpoint of one workflow instance. Timestamps are epoch milliseconds. */
export interface WorkflowSnapshot {
  instanceId: string;
  definitionHash: string;
  state: WorkflowState;
  createdAt: number;
  updatedAt: number;
  initialInput?: Uint8Array;
  /** Per task id, its failed runs (absent when none was recorded). */
  attempts?: Record<string, TaskAttempts>;
}

export type InProgressState = Extract<WorkflowState, { kind: "InProgress" }>;
export type PausedState = Extract<WorkflowState, { kind: "Paused" }>;
export type CancelledState = Extract<WorkflowState, { kind: "Cancelled" }>;
/** Who asked for a cancel or a pause, and why; both optional (null when absent). */
export interface ControlRequest {
  reason?: string | null;
  requestedBy?: string | null;
}

/** Terminal: Completed, Failed or Cancelled. Its results are final and it never runs again. */
export function isFinished(state: WorkflowState): boolean {
  return state.kind === "Completed" || state.kind === "Failed" || state.kind === "Cancelled";
}

/** The completed tasks a state carries (InProgress, Paused and Cancelled keep them). */
export function completedTasksOf(state: WorkflowState): Record<string, TaskResult> | undefined {
  return state.kind === "InProgress" || state.kind === "Paused" || state.kind === "Cancelled"
    ? state.completedTasks
    : undefined;
}

/** The task a position runs next: AtTask's task, or the task after an awaited event. */
export function positionTaskId(position: ExecutionPosition): string | null {
  if (position.kind === "AtTask") return position.taskId;
  if (position.kind === "AwaitingEvent") return position.nextTaskId;
  return null;
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

/**
 * Where completeTasks moves a workflow once a task's result is recorded (a completion's `next`):
 * a new position (its task ready with this output as input, scheduled by the position's runAt,
 * priority and queue), or Completed with its final output, or Failed with its error.
 */
export type NextStep =
  | ExecutionPosition
  | { kind: "Completed"; finalOutput: Uint8Array }
  | { kind: "Failed"; error: string };

/**
 * The snapshot after one step: `taskId`'s output recorded (it becomes the last completed task)
 * and the workflow moved to `next`, at `now`. What completeTasks with `next` stores, as one
 * saveSnapshot would; pure. The caller has checked that the workflow is InProgress at `taskId`.
 */
export function applyStep(
  snapshot: WorkflowSnapshot,
  taskId: string,
  output: Uint8Array,
  next: NextStep,
  now: number = Date.now(),
): WorkflowSnapshot {
  if (next.kind === "Completed") return markCompleted(snapshot, next.finalOutput, now);
  if (next.kind === "Failed") return markFailed(snapshot, next.error, now);
  return updatePosition(markTaskCompleted(snapshot, taskId, output, now), next, now);
}

/** The stored output of a task, or undefined if it has not completed (or the state keeps no results). */
export function getTaskResult(snapshot: WorkflowSnapshot, taskId: string): Uint8Array | undefined {
  const tasks = completedTasksOf(snapshot.state);
  if (tasks === undefined) return undefined;
  return Object.hasOwn(tasks, taskId) ? tasks[taskId]?.output : undefined;
}

/** The output of the last completed task, if any. */
export function getLastTaskOutput(snapshot: WorkflowSnapshot): Uint8Array | undefined {
  const state = snapshot.state;
  if ((state.kind !== "InProgress" && state.kind !== "Paused") || state.lastCompletedTaskId === null)
    return undefined;
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

/**
 * The task an AwaitingEvent position would run once its event arrives or its timeout passes, if
 * the snapshot is InProgress at such a position and that task has no result yet.
 */
export function awaitedTaskId(snapshot: WorkflowSnapshot): string | undefined {
  const state = snapshot.state;
  if (state.kind !== "InProgress" || state.position.kind !== "AwaitingEvent") return undefined;
  const taskId = state.position.nextTaskId;
  return Object.hasOwn(state.completedTasks, taskId) ? undefined : taskId;
}

function controlText(value: string | null | undefined): string | null {
  return value === undefined ? null : value;
}

/** InProgress -> Paused at the same position, with the same results. */
export function markPaused(
  snapshot: WorkflowSnapshot,
  request: ControlRequest = {},
  now: number = Date.now(),
): WorkflowSnapshot {
  const state = inProgress(snapshot, "markPaused");
  return {
    ...snapshot,
    updatedAt: now,
    state: {
      kind: "Paused",
      reason: controlText(request.reason),
      requestedBy: controlText(request.requestedBy),
      pausedAt: now,
      position: state.position,
      completedTasks: state.completedTasks,
      lastCompletedTaskId: state.lastCompletedTaskId,
    },
  };
}

/** Paused -> InProgress at the position it was paused at, with every result it holds. */
export function markResumed(snapshot: WorkflowSnapshot, now: number = Date.now()): WorkflowSnapshot {
  const state = snapshot.state;
  if (state.kind !== "Paused") {
    throw new TypeError(`markResumed: workflow ${snapshot.instanceId} is ${state.kind}, not Paused`);
  }
  return {
    ...snapshot,
    updatedAt: now,
    state: {
      kind: "InProgress",
      position: state.position,
      completedTasks: state.completedTasks,
      lastCompletedTaskId: state.lastCompletedTaskId,
    },
  };
}

/**
 * InProgress or Paused -> Cancelled, keeping the results; `interruptedAtTaskId` is the task of
 * the position (AtTask's task, or the task after an awaited event), if it has no result yet.
 */
export function markCancelled(
  snapshot: WorkflowSnapshot,
  request: ControlRequest = {},
  now: number = Date.now(),
): WorkflowSnapshot {
  const state = snapshot.state;
  if (state.kind !== "InProgress" && state.kind !== "Paused") {
    throw new TypeError(
      `markCancelled: workflow ${snapshot.instanceId} is ${state.kind}, not InProgress or Paused`,
    );
  }
  const taskId = positionTaskId(state.position);
  return {
    ...snapshot,
    updatedAt: now,
    state: {
      kind: "Cancelled",
      reason: controlText(request.reason),
      requestedBy: controlText(request.requestedBy),
      cancelledAt: now,
      completedTasks: state.completedTasks,
      interruptedAtTaskId: taskId !== null && !Object.hasOwn(state.completedTasks, taskId) ? taskId : null,
    },
  };
}

/** The schedule of the task a position makes ready, with the defaults filled in. */
export function scheduleOf(position: ExecutionPosition): {
  runAt: number | null;
  priority: number;
  queue: string;
} {
  const given: TaskSchedule = position.kind === "AtTask" || position.kind === "AwaitingEvent" ? position : {};
  return {
    runAt: position.kind === "AtTask" ? (position.runAt ?? null) : null,
    priority: given.priority ?? DEFAULT_PRIORITY,
    queue: given.queue ?? DEFAULT_QUEUE,
  };
}

/**
 * The discovery key of a ready task: when it became ready plus one `agingMs` per priority level
 * below 1, so a priority-5 task that has waited 4 x agingMs goes before a fresh priority-1 task.
 */
export function effectiveTime(readyAt: number, priority: number, agingMs: number): number {
  return readyAt + (priority - 1) * agingMs;
}
