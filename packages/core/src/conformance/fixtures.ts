import type { ExecutionPosition, WorkflowSnapshot, WorkflowState } from "../snapshot.js";

const NOW = 1_700_000_000_000;

/** An InProgress snapshot, optionally at a task and with completed tasks. */
export function inProgress(
  instanceId: string,
  options: {
    position?: ExecutionPosition;
    completed?: Record<string, Uint8Array>;
    last?: string | null;
    initialInput?: Uint8Array;
    updatedAt?: number;
    definitionHash?: string;
  } = {},
): WorkflowSnapshot {
  const completedTasks: Record<string, { taskId: string; output: Uint8Array }> = {};
  for (const [taskId, output] of Object.entries(options.completed ?? {}))
    completedTasks[taskId] = { taskId, output };
  const keys = Object.keys(completedTasks);
  const snapshot: WorkflowSnapshot = {
    instanceId,
    definitionHash: options.definitionHash ?? "def-hash-1",
    createdAt: NOW,
    updatedAt: options.updatedAt ?? NOW,
    state: {
      kind: "InProgress",
      position: options.position ?? { kind: "NotStarted" },
      completedTasks,
      lastCompletedTaskId: options.last !== undefined ? options.last : (keys[keys.length - 1] ?? null),
    },
  };
  if (options.initialInput !== undefined) snapshot.initialInput = options.initialInput;
  return snapshot;
}

/** A snapshot at task `taskId`, ready to run unless something else says otherwise. */
export function atTask(
  instanceId: string,
  taskId: string,
  options: Parameters<typeof inProgress>[1] = {},
): WorkflowSnapshot {
  return inProgress(instanceId, { ...options, position: { kind: "AtTask", taskId } });
}

/** A snapshot waiting for an event of `eventName`, then running `nextTaskId`. */
export function awaiting(
  instanceId: string,
  eventName: string,
  nextTaskId: string,
  options: Parameters<typeof inProgress>[1] & { timeoutAt?: number | null } = {},
): WorkflowSnapshot {
  const { timeoutAt = null, ...rest } = options;
  return inProgress(instanceId, {
    ...rest,
    position: { kind: "AwaitingEvent", eventName, nextTaskId, timeoutAt },
  });
}

export function finished(
  instanceId: string,
  state: Extract<WorkflowState, { kind: "Completed" | "Failed" }>,
): WorkflowSnapshot {
  return { instanceId, definitionHash: "def-hash-1", createdAt: NOW, updatedAt: NOW + 5, state };
}

/** Plain-object form for deep equality, with bytes as arrays so diffs are readable. */
export function comparable(snapshot: WorkflowSnapshot): unknown {
  return JSON.parse(
    JSON.stringify(snapshot, (_key, value) =>
      value instanceof Uint8Array ? { bytes: Array.from(value) } : value,
    ),
  );
}

/** A workflow whose task `t1` is ready in `queue` (or due at `runAt`), at `priority` if given. */
export function queued(
  instanceId: string,
  queue: string,
  runAt?: number,
  priority?: number,
): WorkflowSnapshot {
  return inProgress(instanceId, {
    position: {
      kind: "AtTask",
      taskId: "t1",
      queue,
      ...(runAt === undefined ? {} : { runAt }),
      ...(priority === undefined ? {} : { priority }),
    },
  });
}
