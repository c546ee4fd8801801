import { toBytes } from "../bytes.js";
import { decodeSnapshotHeader, encodeSnapshotHeader } from "../codec.js";
import {
  awaitedTaskId,
  completedTasksOf,
  isFinished,
  readyTaskId,
  scheduleOf,
  type TaskAttempts,
  type TaskResult,
  type WorkflowSnapshot,
} from "../snapshot.js";

/** The stored status of a workflow, the one field every adapter indexes and checks. */
export type StoredStatus = WorkflowSnapshot["state"]["kind"];

/**
 * What every adapter stores for one snapshot, computed once here so that all of them store the
 * same thing. The header is the codec's header without the task results and without the initial
 * input: the initial input is a value of its own (a column, a hash field, an attribute, a chunked
 * value), read by discovery without decoding the header, exactly like a task output.
 */
export interface StoredSnapshot {
  instanceId: string;
  definitionHash: string;
  status: StoredStatus;
  /** Completed, Failed or Cancelled: results are final and it can never be InProgress again. */
  finished: boolean;
  /** Paused: discovery skips it and nothing moves it on until it is resumed. */
  paused: boolean;
  /** encodeSnapshotHeader of the snapshot without initialInput. */
  header: Uint8Array;
  /** null when the snapshot has none (an empty array is a value, kept as such). */
  initialInput: Uint8Array | null;
  /** The task of an AtTask position, else null (whether or not it has a result). */
  positionTaskId: string | null;
  /** The task a worker could run now (readyTaskId), else null: the ready-index field. */
  readyTaskId: string | null;
  /**
   * An InProgress wait for an event whose next task has no result yet: that task is ready once an
   * event of `eventName` is pending (the adapter checks its events in the same atomic step), or
   * once `timeoutAt` has passed (the timer index). null otherwise.
   */
  awaiting: { eventName: string; nextTaskId: string; timeoutAt: number | null } | null;
  lastCompletedTaskId: string | null;
  /** The completed tasks' outputs, stored as records of their own (InProgress, Paused, Cancelled). */
  results: TaskResult[];
  /**
   * The schedule of the ready or awaited task (defaults filled in): `runAt` (null: at once; a
   * future one belongs in the timer index), `priority` and `queue`. A task whose attempts say
   * `retryAt` is not ready before it (null: held, in no index).
   */
  schedule: { runAt: number | null; priority: number; queue: string };
  /** The attempts per task, stored beside the header (failTasks updates them without a header write). */
  attempts: Array<{ taskId: string } & TaskAttempts>;
  createdAt: number;
  updatedAt: number;
}

/** Splits a snapshot into its stored fields. Pure; the snapshot is not changed. */
export function toStoredSnapshot(snapshot: WorkflowSnapshot): StoredSnapshot {
  const { initialInput, attempts: _attempts, ...rest } = snapshot;
  const state = snapshot.state;
  const inProgress = state.kind === "InProgress";
  const awaited = awaitedTaskId(snapshot);
  return {
    instanceId: snapshot.instanceId,
    definitionHash: snapshot.definitionHash,
    status: state.kind,
    finished: isFinished(state),
    paused: state.kind === "Paused",
    header: encodeSnapshotHeader(rest),
    initialInput: initialInput === undefined ? null : toBytes(initialInput),
    positionTaskId: inProgress && state.position.kind === "AtTask" ? state.position.taskId : null,
    readyTaskId: readyTaskId(snapshot) ?? null,
    awaiting:
      awaited !== undefined && inProgress && state.position.kind === "AwaitingEvent"
        ? { eventName: state.position.eventName, nextTaskId: awaited, timeoutAt: state.position.timeoutAt }
        : null,
    lastCompletedTaskId:
      state.kind === "InProgress" || state.kind === "Paused" ? state.lastCompletedTaskId : null,
    results: Object.values(completedTasksOf(state) ?? {}),
    schedule:
      state.kind === "InProgress" || state.kind === "Paused"
        ? scheduleOf(state.position)
        : { runAt: null, priority: 3, queue: "default" },
    attempts: Object.entries(snapshot.attempts ?? {}).map(([taskId, a]) => ({ taskId, ...a })),
    createdAt: snapshot.createdAt,
    updatedAt: snapshot.updatedAt,
  };
}

/** The stored parts of one snapshot, as an adapter reads them back. */
export interface StoredParts {
  instanceId: string;
  header: Uint8Array;
  /** The stored initial input; null or undefined when none was stored. */
  initialInput: Uint8Array | null | undefined;
  results: Iterable<TaskResult>;
  lastCompletedTaskId: string | null;
  /** The stored updatedAt when the adapter keeps it beside the header (saveTaskResult moves it). */
  updatedAt?: number;
  /** The attempts stored beside the header (none: empty or absent). */
  attempts?: Iterable<{ taskId: string } & TaskAttempts>;
}

/**
 * Joins stored parts into a snapshot (the inverse of toStoredSnapshot). A header written before
 * the initial input was split out still carries it; a stored value of its own wins.
 * Undecodable data gives a SerializationError naming the instance.
 */
export function fromStoredParts(parts: StoredParts): WorkflowSnapshot {
  const snapshot = decodeSnapshotHeader(parts.header, parts.instanceId, {
    results: parts.results,
    lastCompletedTaskId: parts.lastCompletedTaskId,
    ...(parts.updatedAt === undefined ? {} : { updatedAt: parts.updatedAt }),
    ...(parts.attempts === undefined ? {} : { attempts: attemptsRecord(parts.attempts) }),
  });
  if (parts.initialInput !== null && parts.initialInput !== undefined) {
    snapshot.initialInput = toBytes(parts.initialInput);
  }
  return snapshot;
}

function attemptsRecord(rows: Iterable<{ taskId: string } & TaskAttempts>): Record<string, TaskAttempts> {
  const out: Record<string, TaskAttempts> = {};
  for (const { taskId, ...a } of rows) {
    Object.defineProperty(out, taskId, { value: a, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
