import type { Tables } from "./layout.js";

/**
 * Every statement the backend runs, built once per table prefix and named after the operation
 * it serves. The Postgres adapter names the same statements the same way (see the README, "How
 * the operations work"). Ids are always bound parameters; `:now` is the caller's clock reading
 * (see the README, "Clock").
 */
export function statements(t: Tables) {
  return {
    ...snapshotWrites(t),
    ...snapshotReads(t),
    ...claimStatements(t),
    ...discovery(t),
  } as const;
}

/** saveSnapshot, saveTaskResult and completeTasks: the writes of a snapshot and of one task result. */
function snapshotWrites(t: Tables) {
  return {
    /** saveSnapshot, saveTaskResult, completeTasks: the stored status, read under the write lock. */
    lockSnapshot: `SELECT status FROM ${t.snapshots} WHERE instance_id = ?`,

    /** saveSnapshot: the snapshot row (the refusals ran before it, under the same lock). */
    upsertSnapshot: `
      INSERT INTO ${t.snapshots}
        (instance_id, header, status, definition_hash, initial_input, last_completed_task_id, ready_task_id, updated_at)
      VALUES (:id, :header, :status, :hash, :input, :last, :ready, :updatedAt)
      ON CONFLICT (instance_id) DO UPDATE SET
        header = excluded.header, status = excluded.status, definition_hash = excluded.definition_hash,
        initial_input = excluded.initial_input, last_completed_task_id = excluded.last_completed_task_id,
        ready_task_id = excluded.ready_task_id, updated_at = excluded.updated_at`,

    /** saveSnapshot (the old results) and deleteSnapshot. */
    deleteResults: `DELETE FROM ${t.results} WHERE instance_id = ?`,

    /** saveTaskResult, completeTasks, and saveSnapshot (one row per result). */
    upsertResult: `
      INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output`,

    /** After a task result: it is the last one, updated_at never goes back, its task is no longer ready. */
    recordResult: `
      UPDATE ${t.snapshots} SET
        last_completed_task_id = :task,
        updated_at = max(updated_at, :now),
        ready_task_id = CASE WHEN ready_task_id = :task THEN NULL ELSE ready_task_id END
      WHERE instance_id = :id`,
  } as const;
}

/** loadSnapshot, deleteSnapshot and listSnapshotsPage. */
function snapshotReads(t: Tables) {
  return {
    /** loadSnapshot: the snapshot row, then its results (loadResults), in one read transaction. */
    loadSnapshot: `
      SELECT header, initial_input, last_completed_task_id, updated_at FROM ${t.snapshots} WHERE instance_id = ?`,
    loadResults: `SELECT task_id, output FROM ${t.results} WHERE instance_id = ?`,

    /** deleteSnapshot: the snapshot row, then (deleteResults, deleteClaims) its results and claims. */
    deleteSnapshot: `DELETE FROM ${t.snapshots} WHERE instance_id = ?`,
    deleteClaims: `DELETE FROM ${t.claims} WHERE instance_id = ?`,

    /** listSnapshotsPage: keyset pagination on the primary key, first page and after a cursor. */
    listPage: `SELECT instance_id FROM ${t.snapshots} ORDER BY instance_id LIMIT ?`,
    listPageAfter: `SELECT instance_id FROM ${t.snapshots} WHERE instance_id > ? ORDER BY instance_id LIMIT ?`,
  } as const;
}

/** claimTask, releaseTaskClaim and extendTaskClaim (and the claims fences read). */
function claimStatements(t: Tables) {
  return {
    /** The stored claim on (instance, task), live or not: fences, claims, releases and extends read it. */
    readClaim: `
      SELECT worker_id, token, claimed_at, expires_at FROM ${t.claims} WHERE instance_id = ? AND task_id = ?`,

    /** claimTask: the next fencing token, then the claim row (the live check ran before, under the lock). */
    nextToken: `UPDATE ${t.tokenSequence} SET last_token = last_token + 1 WHERE id = 1 RETURNING last_token`,
    claimTask: `
      INSERT INTO ${t.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at)
      VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET
        worker_id = excluded.worker_id, token = excluded.token,
        claimed_at = excluded.claimed_at, expires_at = excluded.expires_at`,

    /** releaseTaskClaim and completeTasks: the claim row goes. */
    releaseClaim: `DELETE FROM ${t.claims} WHERE instance_id = ? AND task_id = ?`,

    /** extendTaskClaim: the new expiry. */
    extendClaim: `UPDATE ${t.claims} SET expires_at = ? WHERE instance_id = ? AND task_id = ?`,
  } as const;
}

/** findAvailableTasks and claimAvailableTasks. */
function discovery(t: Tables) {
  const live = "(c.expires_at IS NULL OR c.expires_at > :now)";
  return {
    /**
     * findAvailableTasks and claimAvailableTasks: walks the partial index in (updated_at,
     * instance_id) order; its cost follows the ready tasks it reads (plus the live claims it
     * skips), never the snapshots that are not ready.
     */
    findAvailable: `
      SELECT s.instance_id, s.ready_task_id, s.definition_hash,
             coalesce(r.output, s.initial_input, x'') AS input
      FROM ${t.snapshots} AS s INDEXED BY ${t.readyIndex}
      LEFT JOIN ${t.results} AS r
        ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      WHERE s.ready_task_id IS NOT NULL
        AND NOT EXISTS (
          SELECT 1 FROM ${t.claims} AS c
          WHERE c.instance_id = s.instance_id AND c.task_id = s.ready_task_id AND ${live}
        )
      ORDER BY s.updated_at, s.instance_id
      LIMIT :limit`,
  } as const;
}

export type StatementName = keyof ReturnType<typeof statements>;

/** A row of readClaim. */
export interface ClaimRow {
  worker_id: string;
  token: number;
  claimed_at: number;
  expires_at: number | null;
}

/** A row of findAvailable. */
export interface ReadyRow {
  instance_id: string;
  ready_task_id: string;
  definition_hash: string;
  input: Uint8Array;
}
