/**
 * Retention and operator reads: purgeFinished (the finish-time index), loadTaskResult and
 * loadTaskClaims, with their statements (statements() in sql.ts includes them).
 *
 * The finish time is snapshots.finished_at: this machine's clock (the write clock, read under the
 * write lock) when a write first made the workflow Completed, Failed or Cancelled. The writes that
 * can do so set it in their own transaction: upsertSnapshot (a finished snapshot), storeStep (a
 * step to Completed or Failed) and storeTransition (a cancel), each keeping a time already there,
 * so saving a finished workflow again keeps its first finish. Unfinished rows hold null and are
 * not in the partial index snapshots_finished, so a purge never reads them.
 */
import { compareIds, failures, type TaskClaim, toBytes } from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import type { Tables } from "./layout.js";
import type { Queries } from "./queries.js";

/**
 * How many workflows one purge transaction deletes at most. A call with a larger limit runs
 * several transactions, so other writers (other processes wait on busy_timeout) are not held off
 * for the whole purge. Each workflow's deletion is whole inside its transaction.
 */
export const PURGE_BATCH = 100;

export function retention(t: Tables) {
  return {
    /**
     * purgeFinished, inside the write lock: the oldest finishes before :before, walked in the
     * partial index's order (finished_at, instance_id): no sort, and no unfinished row read.
     */
    finishedBefore: `
      SELECT instance_id FROM ${t.snapshots} INDEXED BY ${t.finishedIndex}
      WHERE finished_at IS NOT NULL AND finished_at < :before
      ORDER BY finished_at, instance_id
      LIMIT :limit`,

    /**
     * loadTaskResult, one statement (one consistent read): whether the instance exists (the
     * primary-key index alone, not the row) and the one result row by its primary key. The row's
     * status is read only when that result exists (the correlated NOT EXISTS runs per result
     * row), to show nothing for Completed and Failed, whose state carries no results; a step or
     * save to either deletes the results anyway. No other output and no header is read.
     */
    loadTaskResult: `
      SELECT
        EXISTS (SELECT 1 FROM ${t.snapshots} WHERE instance_id = :id) AS found,
        (SELECT r.output FROM ${t.results} AS r
          WHERE r.instance_id = :id AND r.task_id = :task
            AND NOT EXISTS (
              SELECT 1 FROM ${t.snapshots} AS s
              WHERE s.instance_id = r.instance_id AND s.status IN ('completed', 'failed')
            )) AS output`,

    /**
     * loadTaskClaims: the instance's claim rows (a released claim has none) but the revoked ones
     * (a cancel sets their expiry to :revoked, REVOKED_EXPIRY), live or expired.
     */
    loadTaskClaims: `
      SELECT task_id, worker_id, token, claimed_at, expires_at FROM ${t.claims}
      WHERE instance_id = :id AND (expires_at IS NULL OR expires_at > :revoked)`,
  } as const;
}

/**
 * deleteSnapshot and purgeFinished, inside a write transaction: the row, then its results,
 * claims, events and attempts. The token counter is a row of its own and never goes back, so
 * later tokens stay larger. Returns false (nothing deleted) when the instance is missing.
 */
export function deleteInstance(q: Queries, instanceId: string): boolean {
  if (q.run("deleteSnapshot", instanceId) === 0) return false;
  q.run("deleteResults", instanceId);
  q.run("deleteClaims", instanceId);
  q.run("deleteEvents", instanceId);
  q.run("deleteAttempts", instanceId);
  return true;
}

/**
 * purgeFinished: BEGIN IMMEDIATE transactions (`write`, the backend's) of up to PURGE_BATCH
 * workflows each, until `limit` are deleted or none is left before the cut-off. Each reads the
 * oldest finishes and deletes them under the write lock, so no other connection or process can
 * delete one of them in between: a transaction counts exactly what it deleted, and purges running
 * at once add up without counting a workflow twice.
 */
export function purgeFinished(
  q: Queries,
  write: (body: () => number) => number,
  before: number,
  limit: number,
): number {
  let purged = 0;
  while (purged < limit) {
    const batch = Math.min(limit - purged, PURGE_BATCH);
    const deleted = write(() => {
      const rows = q.allNamed<{ instance_id: string }>("finishedBefore", { before, limit: batch });
      return rows.filter((row) => deleteInstance(q, row.instance_id)).length;
    });
    purged += deleted;
    if (deleted < batch) break;
  }
  return purged;
}

/** loadTaskResult: the output (a fresh array from the driver), null, or NotFound. */
export function loadTaskResult(q: Queries, instanceId: string, taskId: string): Uint8Array | null {
  const row = q.getNamed<{ found: number; output: Uint8Array | null }>("loadTaskResult", {
    id: instanceId,
    task: taskId,
  });
  if (row === undefined || row.found !== 1) throw failures.snapshotNotFound(instanceId);
  return row.output === null ? null : toBytes(row.output);
}

/** Code-unit order of task ids, as the contract lists claims. */
/** Code-point order (compareIds), the order listSnapshotsPage gives instance ids. */
function byTaskId(a: TaskClaim, b: TaskClaim): number {
  return compareIds(a.taskId, b.taskId);
}

/** loadTaskClaims: every claim row of the instance neither released nor revoked, by task id. */
export function loadTaskClaims(q: Queries, instanceId: string): TaskClaim[] {
  const rows = q.allNamed<{
    task_id: string;
    worker_id: string;
    token: number;
    claimed_at: number;
    expires_at: number | null;
  }>("loadTaskClaims", { id: instanceId, revoked: REVOKED_EXPIRY });
  return rows
    .map(
      (row): TaskClaim => ({
        instanceId,
        taskId: row.task_id,
        workerId: row.worker_id,
        claimedAt: row.claimed_at,
        expiresAt: row.expires_at,
        token: row.token,
      }),
    )
    .sort(byTaskId);
}
