/**
 * The SQL of retention and of the operator reads: the finish time every finishing write records,
 * purgeFinished's two statements, loadTaskResult and loadTaskClaims. statements() in sql.ts
 * includes them.
 */
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import type { Layout } from "./layout.js";
import { ms } from "./sql-discovery.js";

/**
 * The `finished_at` a write stores (epoch ms, the server's clock): the row's own when it has one
 * (a terminal -> terminal write keeps the first finish), now when `finished` makes it finished,
 * null when it is not finished. `old` is the row's stored value (null for an insert).
 */
export const finishedAt = (finished: string, old: string) =>
  `CASE WHEN ${finished} THEN coalesce(${old}, ${ms("clock_timestamp()")}) END`;

/** purgeFinished, loadTaskResult and loadTaskClaims. */
export function retentionStatements(l: Layout) {
  /** The epoch as a timestamptz: the expiry cancelWorkflow gives a revoked claim. */
  const revoked = `to_timestamp(${REVOKED_EXPIRY / 1000})`;
  return {
    /**
     * purgeFinished, first statement of its transaction: up to $2 finished rows whose finish time
     * is before $1, oldest finish first, read from snapshots_finished_idx in index order and
     * locked. SKIP LOCKED: a row another purge (or any write) holds is left to a later call, so two
     * purges never wait on each other nor take the same row; a row deleted meanwhile is not
     * returned (its lock finds it gone).
     */
    purgeSelect: `
      SELECT t.instance_id FROM ${l.snapshots} t
      WHERE t.finished_at IS NOT NULL AND t.finished_at < $1
      ORDER BY t.finished_at, t.instance_id
      LIMIT $2
      FOR UPDATE SKIP LOCKED`,

    /**
     * purgeFinished, second statement: deletes the rows purgeSelect locked ($1) with their
     * results, claims, events and attempts, as deleteSnapshot does. A statement of its own, so
     * that its snapshot is taken after the locks: every write of a locked instance's results,
     * events or claims also locks its row, so all of them have committed and are seen here, and
     * none can start until the commit (deleteSnapshot needs deleteOrphans for this; this does not).
     */
    purgeDelete: `
      WITH d AS (
        DELETE FROM ${l.snapshots} t WHERE t.instance_id = ANY($1::text[]) RETURNING t.instance_id
      ),
      r AS (DELETE FROM ${l.taskResults} x USING d WHERE x.instance_id = d.instance_id),
      c AS (DELETE FROM ${l.claims} x USING d WHERE x.instance_id = d.instance_id),
      e AS (DELETE FROM ${l.events} x USING d WHERE x.instance_id = d.instance_id),
      a AS (DELETE FROM ${l.attempts} x USING d WHERE x.instance_id = d.instance_id)
      SELECT count(*)::int AS n FROM d`,

    /**
     * loadTaskResult: the state flags of the row and one result row, both by primary key; no
     * header, no other output. Completed and Failed (finished, not cancelled) show no result, as
     * their state carries none: the output is then not even read. No row back: no instance.
     */
    loadTaskResult: `
      SELECT t.finished AND NOT t.cancelled AS final,
             CASE WHEN t.finished AND NOT t.cancelled THEN NULL ELSE r.output END AS output
      FROM ${l.snapshots} t
      LEFT JOIN ${l.taskResults} r ON r.instance_id = t.instance_id AND r.task_id = $2
      WHERE t.instance_id = $1`,

    /**
     * loadTaskClaims: the instance's claims from both places they live, the claims table and the
     * snapshot row's claim slot, live or expired, but not revoked (expiry = the epoch). Times as
     * claimTask and extendClaim return them (epoch ms of the same columns).
     */
    loadTaskClaims: `
      SELECT c.task_id, c.worker_id, c.token::text AS token,
             ${ms("c.claimed_at")}::text AS claimed_at, ${ms("c.expires_at")}::text AS expires_at
      FROM ${l.claims} c
      WHERE c.instance_id = $1 AND c.expires_at IS DISTINCT FROM ${revoked}
      UNION ALL
      SELECT t.claim_task, t.claim_worker, t.claim_token::text,
             ${ms("t.claim_at")}::text, ${ms("t.claim_expires")}::text
      FROM ${l.snapshots} t
      WHERE t.instance_id = $1 AND t.claim_task IS NOT NULL AND t.claim_expires IS DISTINCT FROM ${revoked}`,
  };
}
