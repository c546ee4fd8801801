/**
 * Retention and the operator reads: purgeFinished over the finish-time index
 * (snapshots_finished_idx, see sql-retention.ts), loadTaskResult and loadTaskClaims. Each
 * function sends its statements through the backend's one send point (`Db`).
 */
import { compareIds, failures, type TaskClaim, toBytes } from "@sayiir/persistence-core";
import { textArray } from "./arrays.js";
import type { Db } from "./control.js";
import { type ClaimRow, claimOf } from "./rows.js";

/** A row of loadTaskResult: `final` (Completed or Failed: no results), the output (null: none). */
interface ResultRow {
  final: boolean;
  output: Buffer | null;
}

/** A row of loadTaskClaims: a claim from the claims table or the snapshot row's slot. */
interface ListedClaimRow extends ClaimRow {
  task_id: string;
  worker_id: string;
}

/**
 * purgeFinished, inside the caller's transaction: the oldest finished rows locked (purgeSelect),
 * then deleted with what belongs to them (purgeDelete). Returns how many were deleted.
 */
export async function purgeFinished(db: Db, finishedBefore: number, limit: number): Promise<number> {
  const locked = await db<{ instance_id: string }>("purgeSelect", [finishedBefore, limit]);
  if (locked.rows.length === 0) return 0;
  const ids = textArray(locked.rows.map((row) => row.instance_id));
  const r = await db<{ n: number }>("purgeDelete", [ids]);
  return r.rows[0]?.n ?? 0;
}

/** loadTaskResult: one result row (pg builds a fresh buffer per row: the caller's own bytes). */
export async function loadTaskResult(db: Db, instanceId: string, taskId: string): Promise<Uint8Array | null> {
  const row = (await db<ResultRow>("loadTaskResult", [instanceId, taskId])).rows[0];
  if (row === undefined) throw failures.snapshotNotFound(instanceId);
  return row.final || row.output === null ? null : toBytes(row.output);
}

/** Code-point order (compareIds), the order listSnapshotsPage gives instance ids. */
const byTaskId = (a: TaskClaim, b: TaskClaim) => compareIds(a.taskId, b.taskId);

/** loadTaskClaims: the claims of both places, by task id; none for an unknown instance. */
export async function loadTaskClaims(db: Db, instanceId: string): Promise<TaskClaim[]> {
  const rows = (await db<ListedClaimRow>("loadTaskClaims", [instanceId])).rows;
  return rows.map((row) => claimOf(instanceId, row.task_id, row.worker_id, row)).sort(byTaskId);
}
