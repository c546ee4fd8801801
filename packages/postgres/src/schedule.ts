/**
 * Scheduling on the JS side: the schedule and attempts values saveSnapshot binds, the attempts
 * loadSnapshot reads back, and failTasks (its statements are in sql-schedule.ts).
 */
import {
  type CompletionOutcome,
  failures,
  type TaskAttempts,
  type ValidFailure,
} from "@sayiir/persistence-core";
import type { StoredSnapshot } from "@sayiir/persistence-core/adapter";
import type { Db } from "./control.js";
import type { LockRow } from "./rows.js";

/**
 * upsertSnapshot's $15..$20: the position task (takeovers count on it), run_at, priority, queue,
 * and the position task's retryAt and held (retryAt null) from the snapshot's own attempts.
 */
export function scheduleValues(stored: StoredSnapshot): unknown[] {
  const task = stored.readyTaskId ?? stored.awaiting?.nextTaskId ?? null;
  const retry = task === null ? undefined : stored.attempts.find((a) => a.taskId === task)?.retryAt;
  return [
    stored.positionTaskId ?? stored.awaiting?.nextTaskId ?? null,
    stored.schedule.runAt,
    stored.schedule.priority,
    stored.schedule.queue,
    retry ?? null,
    retry === null,
  ];
}

/** insertAttempts' bind values: the instance, then parallel arrays. */
export function attemptArrays(
  instanceId: string,
  attempts: ReadonlyArray<{ taskId: string } & TaskAttempts>,
): unknown[] {
  return [
    instanceId,
    attempts.map((a) => a.taskId),
    attempts.map((a) => a.count),
    attempts.map((a) => a.lastError),
    attempts.map((a) => a.lastFailedAt),
    attempts.map((a) => a.retryAt ?? null),
    attempts.map((a) => a.retryAt === null),
  ];
}

/** A kind-2 row of loadSnapshot (JSON) as stored attempts: held is retryAt null, no retry_at is absent. */
export function attemptOf(taskId: string, json: string): { taskId: string } & TaskAttempts {
  const a = JSON.parse(json) as {
    count: number;
    lastError: string | null;
    lastFailedAt: number | null;
    retryAt: number | null;
    held: boolean;
  };
  const out: { taskId: string } & TaskAttempts = {
    taskId,
    count: a.count,
    lastError: a.lastError,
    lastFailedAt: a.lastFailedAt,
  };
  if (a.held) out.retryAt = null;
  else if (a.retryAt !== null) out.retryAt = a.retryAt;
  return out;
}

/**
 * One failTasks item inside the call's transaction: the snapshot row locked, the refusals in
 * completeTasks' order (missing, fence, finished), then the attempt recorded and the claim
 * released with the task placed again (recordFailure, placeFailed). A refused item writes nothing.
 */
export async function failTask(db: Db, f: ValidFailure): Promise<CompletionOutcome> {
  const stored = (await db<LockRow>("lockSnapshot", [f.instanceId])).rows[0];
  if (stored === undefined) return failures.snapshotNotFound(f.instanceId);
  const fence = await db("checkFence", [f.instanceId, f.taskId, f.token]);
  if ((fence.rowCount ?? 0) === 0) return failures.fenceRejected(f.instanceId, f);
  if (stored.finished) return failures.resultsFinal(f.instanceId);
  await db("recordFailure", [f.instanceId, f.taskId, f.retryAt, f.error]);
  await db("placeFailed", [f.instanceId, f.taskId, f.retryAt]);
  return null;
}
