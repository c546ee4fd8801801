/**
 * Scheduling: where a row's task stands (ready with a key, due at a time, or neither), the
 * attempts stored beside the header, failTasks and takeovers. Each function runs inside the
 * caller's BEGIN IMMEDIATE transaction, with the clock reading taken under the write lock.
 *
 * Keys: a ready task's key is readyAt + (priority - 3) x agingMs, a due task's due_at + (priority
 * - 3) x agingMs: effectiveTime minus the constant 2 x agingMs, so a priority-3 task's key is its
 * readyAt (rows written before migration 3 keep their order) and the order is effectiveTime's.
 */
import type { CompletionOutcome, TaskAttempts, ValidFailure } from "@sayiir/persistence-core";
import { resultRefusal, type WriteView } from "@sayiir/persistence-core/adapter";
import { Status } from "./layout.js";
import type { Queries, Row } from "./queries.js";
import type { AttemptRow, PlacementRow } from "./sql.js";

/** What decides where a task stands. */
export interface PlacementInput {
  /** The AtTask task without a result (toStoredSnapshot's readyTaskId). */
  readyTaskId: string | null;
  /** The wait's task and timeout (toStoredSnapshot's awaiting). */
  awaiting: { nextTaskId: string; timeoutAt: number | null } | null;
  /** Is an event of the wait's name pending? */
  eventPending: boolean;
  runAt: number | null;
  priority: number;
  /** The position task's retryAt: a time, null (held), or undefined (no constraint). */
  retry: number | null | undefined;
  /** The write that makes it ready. */
  updatedAt: number;
}

export interface Placement {
  ready: string | null;
  readyKey: number | null;
  dueTask: string | null;
  dueAt: number | null;
  dueKey: number | null;
}

const NOWHERE: Placement = { ready: null, readyKey: null, dueTask: null, dueAt: null, dueKey: null };

const latest = (...times: Array<number | null | undefined>): number | null => {
  const given = times.filter((t): t is number => typeof t === "number");
  return given.length === 0 ? null : Math.max(...given);
};

/**
 * The placement rule. An AtTask task is ready at max(runAt, retryAt) (or at its write without
 * either); a wait with an event pending at its retryAt or its write; a wait without one at
 * max(timeoutAt, retryAt) (no timeout: only an event makes it ready). A time still ahead of `now`
 * puts the task in the timer index, and so does a timed-out wait (read there up to now); a
 * failure with retryAt null holds it in no index.
 */
export function placement(p: PlacementInput, now: number, agingMs: number): Placement {
  const task = p.readyTaskId ?? p.awaiting?.nextTaskId ?? null;
  if (task === null || p.retry === null) return NOWHERE;
  const shift = (p.priority - 3) * agingMs;
  const due = (at: number): Placement => ({ ...NOWHERE, dueTask: task, dueAt: at, dueKey: at + shift });
  const ready = (at: number): Placement => ({ ...NOWHERE, ready: task, readyKey: at + shift });
  if (p.readyTaskId === null && !p.eventPending) {
    const timeout = p.awaiting?.timeoutAt ?? null;
    return timeout === null ? NOWHERE : due(latest(timeout, p.retry) as number);
  }
  const notBefore = latest(p.readyTaskId === null ? null : p.runAt, p.retry);
  if (notBefore === null) return ready(p.updatedAt);
  return notBefore > now ? due(notBefore) : ready(notBefore);
}

/** The named parameters of a placement (upsertSnapshot, storeTransition, placeTask). */
export function placementParams(p: Placement): Row {
  return { ready: p.ready, readyKey: p.readyKey, dueTask: p.dueTask, dueAt: p.dueAt, dueKey: p.dueKey };
}

/** Is an event of this name pending for the instance? */
export function eventPending(q: Queries, instanceId: string, eventName: string | undefined): boolean {
  return eventName !== undefined && q.get("eventPending", instanceId, eventName) !== undefined;
}

/** The retry constraint of a stored task's attempts (undefined: none). */
export function storedRetry(
  q: Queries,
  instanceId: string,
  taskId: string | null,
): number | null | undefined {
  if (taskId === null) return undefined;
  const row = q.get<{ retry_at: number | null; held: number }>("taskAttempt", instanceId, taskId);
  if (row === undefined) return undefined;
  return row.held === 1 ? null : (row.retry_at ?? undefined);
}

/** loadSnapshot: the stored attempts (undefined when none). */
export function loadAttempts(
  q: Queries,
  instanceId: string,
): Array<{ taskId: string } & TaskAttempts> | undefined {
  const rows = q.all<AttemptRow>("loadAttempts", instanceId);
  if (rows.length === 0) return undefined;
  return rows.map((r) => {
    const a: { taskId: string } & TaskAttempts = {
      taskId: r.task_id,
      count: r.count,
      lastError: r.last_error,
      lastFailedAt: r.last_failed_at,
    };
    if (r.held === 1) a.retryAt = null;
    else if (r.retry_at !== null) a.retryAt = r.retry_at;
    return a;
  });
}

/** saveSnapshot: the snapshot's own attempts replace the stored ones. */
export function replaceAttempts(
  q: Queries,
  instanceId: string,
  attempts: ReadonlyArray<{ taskId: string } & TaskAttempts>,
): void {
  q.run("deleteAttempts", instanceId);
  for (const a of attempts) {
    q.run(
      "insertAttempt",
      instanceId,
      a.taskId,
      a.count,
      a.lastError,
      a.lastFailedAt,
      a.retryAt ?? null,
      a.retryAt === null ? 1 : 0,
    );
  }
}

/** The retryAt a snapshot's attempts give its position task. */
export function snapshotRetry(
  attempts: ReadonlyArray<{ taskId: string } & TaskAttempts>,
  taskId: string | null,
): number | null | undefined {
  return taskId === null ? undefined : attempts.find((a) => a.taskId === taskId)?.retryAt;
}

/** Claim-next over an expired claim on the ready task: a takeover, one more attempt (the last error stays). */
export function recordTakeover(q: Queries, instanceId: string, taskId: string): void {
  q.run("recordTakeover", instanceId, taskId);
}

/**
 * One failTasks item: the refusals of completeTasks (resultRefusal on `view`), then the attempt
 * recorded, the claim released, and the task, if it is the row's pending task, placed again by
 * the placement rule with its new retryAt (null: held in no index; a wait without an event nor a
 * timeout stays in none either).
 */
export function failTask(
  q: Queries,
  f: ValidFailure,
  view: WriteView,
  now: number,
  agingMs: number,
): CompletionOutcome {
  const refusal = resultRefusal(f.instanceId, f, view);
  if (refusal !== null) return refusal;
  q.runNamed("recordFailure", {
    id: f.instanceId,
    task: f.taskId,
    error: f.error,
    now,
    retryAt: f.retryAt,
    held: f.retryAt === null ? 1 : 0,
  });
  q.run("releaseClaim", f.instanceId, f.taskId);
  const row = q.getNamed<PlacementRow>("lockPlacement", { id: f.instanceId, task: f.taskId });
  const pending =
    row !== undefined &&
    (row.ready_task_id === f.taskId ||
      row.due_task_id === f.taskId ||
      (row.status === Status.InProgress &&
        row.has_result === 0 &&
        (row.position_task_id === f.taskId || row.wait_task === f.taskId)));
  if (!pending) return null;
  const wait = row.wait_task === f.taskId;
  const placed = placement(
    {
      readyTaskId: wait ? null : f.taskId,
      awaiting: wait ? { nextTaskId: f.taskId, timeoutAt: row.timeout_at } : null,
      eventPending: wait && eventPending(q, f.instanceId, row.wait_event ?? undefined),
      runAt: row.run_at,
      priority: row.priority,
      retry: f.retryAt,
      updatedAt: row.updated_at,
    },
    now,
    agingMs,
  );
  q.runNamed("placeTask", { id: f.instanceId, ...placementParams(placed) });
  return null;
}
