/**
 * The statements of claimTask, releaseTaskClaim and extendTaskClaim, and readClaim (why one was
 * refused). A claim lives in the snapshot row's claim slot (claim-next's) or in the claims table
 * (claimTask's, or claim-next's when the slot is taken), never both for one (instance, task):
 * each statement looks in both. statements() in sql.ts includes them.
 */
import type { Layout } from "./layout.js";
import { candidate, live, liveInline, ms } from "./sql-discovery.js";
import { notifyWake } from "./sql-wake.js";

/** claimTask, releaseTaskClaim and extendTaskClaim. */
export function claimStatements(l: Layout) {
  return {
    /**
     * Takes the claim if there is none or the existing one has expired (server clock). A live
     * claim, the caller's own included, is left alone: no row back. A takeover draws a fresh token
     * after the row lock is held, so tokens on one (instance, task) only ever grow. The snapshot
     * row (if any) is locked first (s): when its claim slot holds this task's claim, the claim is
     * taken there (u) and no claims row is written; otherwise in the claims table (c1), and the
     * row is written all the same (a new row version: a claim-next that read the row before this
     * claim committed sees it moved and leaves the task alone; see claimNext).
     */
    claimTask: `
      WITH s AS (
        SELECT t.claim_task = $2 AS slot FROM ${l.snapshots} t WHERE t.instance_id = $1 FOR UPDATE
      ),
      n AS (SELECT clock_timestamp() AS t),
      c1 AS (
        INSERT INTO ${l.claims} AS c (instance_id, task_id, worker_id, token, claimed_at, expires_at)
        SELECT $1, $2, $3, nextval(${l.tokenSequence}), n.t, n.t + $4::bigint * interval '1 millisecond' FROM n
        WHERE (SELECT slot FROM s) IS NOT TRUE
        ON CONFLICT (instance_id, task_id) DO UPDATE SET
          worker_id = excluded.worker_id,
          token = nextval(${l.tokenSequence}),
          claimed_at = excluded.claimed_at,
          expires_at = excluded.expires_at
        WHERE c.expires_at IS NOT NULL AND c.expires_at <= excluded.claimed_at
        RETURNING c.token, c.claimed_at, c.expires_at
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          claim_worker = CASE WHEN (SELECT slot FROM s) THEN $3 ELSE t.claim_worker END,
          claim_token = CASE WHEN (SELECT slot FROM s) THEN nextval(${l.tokenSequence}) ELSE t.claim_token END,
          claim_at = CASE WHEN (SELECT slot FROM s) THEN n.t ELSE t.claim_at END,
          claim_expires = CASE WHEN (SELECT slot FROM s) THEN n.t + $4::bigint * interval '1 millisecond'
                               ELSE t.claim_expires END
        FROM n
        WHERE t.instance_id = $1 AND (
          ((SELECT slot FROM s) AND t.claim_expires IS NOT NULL AND t.claim_expires <= n.t)
          OR EXISTS (SELECT 1 FROM c1))
        RETURNING t.claim_token, t.claim_at, t.claim_expires, (SELECT slot FROM s) AS slot
      ),
      w AS (
        SELECT c1.token, c1.claimed_at, c1.expires_at FROM c1
        UNION ALL
        SELECT u.claim_token, u.claim_at, u.claim_expires FROM u WHERE u.slot
      )
      SELECT w.token::text AS token, ${ms("w.claimed_at")}::text AS claimed_at, ${ms("w.expires_at")}::text AS expires_at
      FROM w`,

    /**
     * Deletes this worker's claim (live or expired), a claims row or the snapshot row's claim
     * slot, and ends the lease of the task it held (the row's ready task, or the task after its
     * wait), so claim-next sees the task at once. The snapshot row is locked first (the `>= 0`
     * subquery runs before any claim row is touched): the lock order of every write. The lease is
     * only tested in the select list, so that the planner reads the row by primary key rather than
     * by walking the leased index. A claim released on the task the row offers makes it
     * claimable: its queue is notified.
     */
    releaseClaim: `
      WITH s AS (
        SELECT t.claimed_until IS NOT NULL AND ${candidate("t")} = $2 AS leased,
               t.claim_task = $2 AND t.claim_worker = $3 AS slot,
               ${candidate("t")} = $2 AS offered, t.queue
        FROM ${l.snapshots} t
        WHERE t.instance_id = $1
        FOR UPDATE
      ),
      d AS (
        DELETE FROM ${l.claims} c
        WHERE c.instance_id = $1 AND c.task_id = $2 AND c.worker_id = $3 AND (SELECT count(*) FROM s) >= 0
        RETURNING 1
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          claimed_until = CASE WHEN (SELECT leased FROM s) THEN NULL ELSE t.claimed_until END,
          claim_task = CASE WHEN (SELECT slot FROM s) THEN NULL ELSE t.claim_task END,
          claim_worker = CASE WHEN (SELECT slot FROM s) THEN NULL ELSE t.claim_worker END,
          claim_token = CASE WHEN (SELECT slot FROM s) THEN NULL ELSE t.claim_token END,
          claim_at = CASE WHEN (SELECT slot FROM s) THEN NULL ELSE t.claim_at END,
          claim_expires = CASE WHEN (SELECT slot FROM s) THEN NULL ELSE t.claim_expires END
        WHERE t.instance_id = $1 AND ((SELECT slot FROM s) OR ((SELECT leased FROM s) AND EXISTS (SELECT 1 FROM d)))
        RETURNING (SELECT slot FROM s) AS slot
      )
      SELECT x.n, ${notifyWake(l, "x.n > 0 AND (SELECT offered FROM s)", "(SELECT queue FROM s)")} AS woke
      FROM (SELECT ((SELECT count(*) FROM d) + (SELECT count(*) FROM u WHERE u.slot))::int AS n) x`,

    /**
     * Renewal: expiry = now + duration for a live claim of this worker on a workflow that is not
     * cancelled (the heartbeat on a cancelled workflow fails, whether the claim was revoked or
     * taken after the cancel); a claim without ttl stays so. A lease on the task moves with it
     * (snapshot row locked first, as in release). The claim is a claims row (c) or the row's claim
     * slot (u), never both. `paused`: the instance is Paused, read by the
     * same statement (false when it is missing). No row back: refused (readClaim tells why).
     */
    extendClaim: `
      WITH s AS (
        SELECT t.claimed_until IS NOT NULL AND ${candidate("t")} = $2 AS leased,
               (t.claim_worker = $3 AND NOT t.cancelled AND ${liveInline("t", "$2")}) IS TRUE AS slot,
               t.claim_expires IS NULL AS forever, t.cancelled, t.paused
        FROM ${l.snapshots} t
        WHERE t.instance_id = $1
        FOR UPDATE
      ),
      n AS (SELECT clock_timestamp() + $4::bigint * interval '1 millisecond' AS e),
      c AS (
        UPDATE ${l.claims} c SET expires_at = CASE WHEN c.expires_at IS NULL THEN NULL ELSE n.e END
        FROM n
        WHERE c.instance_id = $1 AND c.task_id = $2 AND c.worker_id = $3 AND ${live("c")}
          AND (SELECT count(*) FROM s) >= 0 AND (SELECT cancelled FROM s) IS NOT TRUE
        RETURNING c.token, c.claimed_at, c.expires_at
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          claim_expires = CASE WHEN (SELECT slot FROM s) AND NOT (SELECT forever FROM s) THEN n.e
                               ELSE t.claim_expires END,
          claimed_until = CASE WHEN (SELECT leased FROM s) THEN coalesce(
              CASE WHEN (SELECT slot FROM s) THEN CASE WHEN (SELECT forever FROM s) THEN NULL ELSE n.e END
                   ELSE (SELECT c.expires_at FROM c) END,
              'infinity'::timestamptz) ELSE t.claimed_until END
        FROM n
        WHERE t.instance_id = $1 AND ((SELECT slot FROM s) OR ((SELECT leased FROM s) AND EXISTS (SELECT 1 FROM c)))
        RETURNING t.claim_token, t.claim_at, t.claim_expires, (SELECT slot FROM s) AS slot
      ),
      w AS (
        SELECT c.token, c.claimed_at, c.expires_at FROM c
        UNION ALL
        SELECT u.claim_token, u.claim_at, u.claim_expires FROM u WHERE u.slot
      )
      SELECT w.token::text AS token, ${ms("w.claimed_at")}::text AS claimed_at, ${ms("w.expires_at")}::text AS expires_at,
             coalesce((SELECT s.paused FROM s), false) AS paused
      FROM w`,

    /**
     * Who holds the claim (live or not; a claims row or the row's claim slot), whether it is live (server clock), and whether its
     * workflow is cancelled: why a release or an extend was refused, in releaseRefusal's and
     * extendRefusal's order.
     */
    readClaim: `
      SELECT c.worker_id, ${live("c")} AS live,
             EXISTS (SELECT 1 FROM ${l.snapshots} x WHERE x.instance_id = $1 AND x.cancelled) AS cancelled
      FROM ${l.claims} c WHERE c.instance_id = $1 AND c.task_id = $2
      UNION ALL
      SELECT t.claim_worker, (t.claim_expires IS NULL OR t.claim_expires > clock_timestamp()), t.cancelled
      FROM ${l.snapshots} t WHERE t.instance_id = $1 AND t.claim_task = $2`,
  };
}
