import type { Tables } from "./layout.js";

/**
 * Every statement the backend runs, built once per table prefix. Ids are always bound
 * parameters; `:now` is the caller's clock reading (see README, "Clock").
 */
export function statements(t: Tables) {
  const live = "(expires_at IS NULL OR expires_at > :now)";
  return {
    snapshotState: `SELECT status FROM ${t.snapshots} WHERE instance_id = ?`,
    upsertSnapshot: `
      INSERT INTO ${t.snapshots}
        (instance_id, header, status, definition_hash, initial_input, last_completed_task_id, ready_task_id, updated_at)
      VALUES (:id, :header, :status, :hash, :input, :last, :ready, :updatedAt)
      ON CONFLICT (instance_id) DO UPDATE SET
        header = excluded.header, status = excluded.status, definition_hash = excluded.definition_hash,
        initial_input = excluded.initial_input, last_completed_task_id = excluded.last_completed_task_id,
        ready_task_id = excluded.ready_task_id, updated_at = excluded.updated_at`,
    deleteResults: `DELETE FROM ${t.results} WHERE instance_id = ?`,
    upsertResult: `
      INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output`,
    recordResult: `
      UPDATE ${t.snapshots} SET
        last_completed_task_id = :task,
        updated_at = max(updated_at, :now),
        ready_task_id = CASE WHEN ready_task_id = :task THEN NULL ELSE ready_task_id END
      WHERE instance_id = :id`,
    loadSnapshot: `
      SELECT header, initial_input, last_completed_task_id, updated_at FROM ${t.snapshots} WHERE instance_id = ?`,
    loadResults: `SELECT task_id, output FROM ${t.results} WHERE instance_id = ?`,
    deleteSnapshot: `DELETE FROM ${t.snapshots} WHERE instance_id = ?`,
    deleteClaims: `DELETE FROM ${t.claims} WHERE instance_id = ?`,
    firstPage: `SELECT instance_id FROM ${t.snapshots} ORDER BY instance_id LIMIT ?`,
    nextPage: `SELECT instance_id FROM ${t.snapshots} WHERE instance_id > ? ORDER BY instance_id LIMIT ?`,
    getClaim: `
      SELECT worker_id, token, claimed_at, expires_at FROM ${t.claims} WHERE instance_id = ? AND task_id = ?`,
    nextToken: `UPDATE ${t.tokenSequence} SET last_token = last_token + 1 WHERE id = 1 RETURNING last_token`,
    putClaim: `
      INSERT INTO ${t.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at)
      VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET
        worker_id = excluded.worker_id, token = excluded.token,
        claimed_at = excluded.claimed_at, expires_at = excluded.expires_at`,
    deleteClaim: `DELETE FROM ${t.claims} WHERE instance_id = ? AND task_id = ?`,
    renewClaim: `UPDATE ${t.claims} SET expires_at = ? WHERE instance_id = ? AND task_id = ?`,
    // Walks the partial index in (updated_at, instance_id) order: its cost follows the ready
    // tasks it reads (plus the live claims it skips), never the snapshots that are not ready.
    readyTasks: `
      SELECT s.instance_id, s.ready_task_id, s.definition_hash,
             coalesce(r.output, s.initial_input, x'') AS input
      FROM ${t.snapshots} AS s INDEXED BY ${t.readyIndex}
      LEFT JOIN ${t.results} AS r
        ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      WHERE s.ready_task_id IS NOT NULL
        AND NOT EXISTS (
          SELECT 1 FROM ${t.claims} AS c
          WHERE c.instance_id = s.instance_id AND c.task_id = s.ready_task_id AND ${live.replaceAll("expires_at", "c.expires_at")}
        )
      ORDER BY s.updated_at, s.instance_id
      LIMIT :limit`,
  } as const;
}

export type StatementName = keyof ReturnType<typeof statements>;
