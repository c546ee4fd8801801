/**
 * The SQL of scheduling: where a row's task stands (the placement rule every write that places
 * it uses), the attempts stored beside the header, and failTasks. statements() in sql.ts includes
 * these statements under the same names as SQLite's.
 *
 * Keys: a ready task's key is readyAt + (priority - 3) x agingMs, a due task's due_at + (priority
 * - 3) x agingMs: effectiveTime minus the constant 2 x agingMs, so a priority-3 task's key is its
 * readyAt (rows written before migration 4 keep their order). agingMs is the backend's option,
 * written into the statements as a literal.
 */
import type { Layout } from "./layout.js";
import { ms } from "./sql-discovery.js";
import { notifyWake, offers, readyNow } from "./sql-wake.js";

/** The placement rule's inputs, as SQL expressions (placeholders or columns). */
export interface PlacementArgs {
  id: string;
  /** The AtTask task without a result. */
  ready: string;
  waitEvent: string;
  waitTask: string;
  timeoutAt: string;
  runAt: string;
  priority: string;
  /** The position task's retryAt (null: none or held) and held (retryAt null). */
  retry: string;
  held: string;
  updatedAt: string;
  /**
   * An event consumed by the same statement (its sequence, null: none), not counted as pending:
   * the statement's snapshot still sees it (a completion with `next` consumes and places at once).
   */
  consumed?: string;
}

/**
 * A one-row SELECT of (ready_task_id, ready_key, due_task_id, due_at, due_key). kind 0: an AtTask
 * task, ready at max(runAt, retryAt) or at its write; 1: a wait with an event pending, at its
 * retryAt or its write; 2: a wait without one and with a timeout, at max(timeout, retryAt), read
 * from the timer index; null: nowhere (no task, a wait without timeout nor event, or held). A time
 * still ahead of the server's clock puts the task in the timer index.
 */
export function placementSql(l: Layout, a: PlacementArgs, agingMs: number): string {
  return `
        SELECT CASE WHEN z.due THEN NULL ELSE z.task END AS ready_task_id,
               CASE WHEN z.due OR z.task IS NULL THEN NULL ELSE coalesce(z.nb, ${a.updatedAt}::bigint) + z.shift END AS ready_key,
               CASE WHEN z.due THEN z.task END AS due_task_id,
               CASE WHEN z.due THEN z.nb END AS due_at,
               CASE WHEN z.due THEN z.nb + z.shift END AS due_key
        FROM (
          SELECT y.task, y.nb, y.shift,
                 coalesce(y.task IS NOT NULL AND (y.kind = 2 OR y.nb > ${ms("clock_timestamp()")}), false) AS due
          FROM (
            SELECT x.kind,
                   CASE x.kind WHEN 0 THEN ${a.ready}::text WHEN 1 THEN ${a.waitTask}::text WHEN 2 THEN ${a.waitTask}::text END AS task,
                   CASE x.kind WHEN 0 THEN greatest(${a.runAt}::bigint, ${a.retry}::bigint)
                               WHEN 1 THEN ${a.retry}::bigint
                               WHEN 2 THEN greatest(${a.timeoutAt}::bigint, ${a.retry}::bigint) END AS nb,
                   (${a.priority}::bigint - 3) * ${agingMs} AS shift
            FROM (SELECT CASE
              WHEN coalesce(${a.held}::boolean, false) THEN NULL
              WHEN ${a.ready}::text IS NOT NULL THEN 0
              WHEN ${a.waitTask}::text IS NULL THEN NULL
              WHEN ${a.waitEvent}::text IS NOT NULL AND EXISTS (
                SELECT 1 FROM ${l.events} p WHERE p.instance_id = ${a.id} AND p.event_name = ${a.waitEvent}::text${
                  a.consumed === undefined
                    ? ""
                    : `
                  AND (${a.consumed}::bigint IS NULL OR p.sequence <> ${a.consumed}::bigint)`
                }
              ) THEN 1
              WHEN ${a.timeoutAt}::bigint IS NOT NULL THEN 2
            END AS kind) x
          ) y
        ) z`;
}

/** The attempts of tasks: loadSnapshot's rows, saveSnapshot's replacement, failTasks. */
export function attemptStatements(l: Layout, agingMs: number) {
  const now = ms("clock_timestamp()");
  /** Is $2 the pending task of row t (ready, due, or its position's task without a result)? */
  const pending = `(t.ready_task_id = $2 OR t.due_task_id = $2
      OR (NOT t.finished AND NOT t.paused AND (t.position_task_id = $2 OR t.wait_task = $2)
          AND NOT EXISTS (SELECT 1 FROM ${l.taskResults} r WHERE r.instance_id = $1 AND r.task_id = $2)))`;
  return {
    /** saveSnapshot: the stored attempts go (insertAttempts writes the snapshot's own). */
    deleteAttempts: `DELETE FROM ${l.attempts} WHERE instance_id = $1`,

    /** saveSnapshot: the snapshot's attempts, parallel arrays ($1 = instance id). */
    insertAttempts: `
      INSERT INTO ${l.attempts} (instance_id, task_id, count, last_error, last_failed_at, retry_at, held)
      SELECT $1, u.task_id, u.count, u.last_error, u.last_failed_at, u.retry_at, u.held
      FROM unnest($2::text[], $3::int[], $4::text[], $5::bigint[], $6::bigint[], $7::boolean[])
        AS u(task_id, count, last_error, last_failed_at, retry_at, held)`,

    /**
     * failTasks, one item, after its refusals (in the caller's transaction, the snapshot row
     * locked): one more attempt with its error, the server's time and when it may run again
     * ($3, null: held). $1 id, $2 task, $3 retryAt, $4 error.
     */
    recordFailure: `
      INSERT INTO ${l.attempts} (instance_id, task_id, count, last_error, last_failed_at, retry_at, held)
      VALUES ($1, $2, 1, $4, ${now}, $3::bigint, $3::bigint IS NULL)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET
        count = ${l.attempts}.count + 1, last_error = excluded.last_error,
        last_failed_at = excluded.last_failed_at, retry_at = excluded.retry_at, held = excluded.held`,

    /**
     * failTasks, one item: the claim released (a claims row, or the row's claim slot), and the task, if it is the row's pending one,
     * placed again by placementSql with its new retryAt ($3; null: held in no index), read from
     * the row as it stands (r); its lease goes. The row is written in any case (deleteSnapshot's
     * `moved` sees it). A row that then offers a task (ready again, or due at its retryAt)
     * notifies its queue. $1 id, $2 task, $3 retryAt.
     */
    placeFailed: `
      WITH d AS (DELETE FROM ${l.claims} WHERE instance_id = $1 AND task_id = $2),
      r AS (SELECT * FROM ${l.snapshots} WHERE instance_id = $1),
      p AS (${placementSql(
        l,
        {
          id: "$1",
          ready: "(SELECT CASE WHEN r.wait_task = $2 THEN NULL ELSE $2::text END FROM r)",
          waitEvent: "(SELECT CASE WHEN r.wait_task = $2 THEN r.wait_event END FROM r)",
          waitTask: "(SELECT CASE WHEN r.wait_task = $2 THEN $2::text END FROM r)",
          timeoutAt: "(SELECT r.timeout_at FROM r)",
          runAt: "(SELECT r.run_at FROM r)",
          priority: "(SELECT r.priority FROM r)",
          retry: "$3",
          held: "($3::bigint IS NULL)",
          updatedAt: "(SELECT r.updated_at FROM r)",
        },
        agingMs,
      )})
      UPDATE ${l.snapshots} t SET
        claimed_until = CASE WHEN coalesce(t.ready_task_id, t.due_task_id) = $2 THEN NULL ELSE t.claimed_until END,
        claim_task = CASE WHEN t.claim_task = $2 THEN NULL ELSE t.claim_task END,
        claim_worker = CASE WHEN t.claim_task = $2 THEN NULL ELSE t.claim_worker END,
        claim_token = CASE WHEN t.claim_task = $2 THEN NULL ELSE t.claim_token END,
        claim_at = CASE WHEN t.claim_task = $2 THEN NULL ELSE t.claim_at END,
        claim_expires = CASE WHEN t.claim_task = $2 THEN NULL ELSE t.claim_expires END,
        ready_task_id = CASE WHEN ${pending} THEN p.ready_task_id ELSE t.ready_task_id END,
        ready_key = CASE WHEN ${pending} THEN p.ready_key ELSE t.ready_key END,
        due_task_id = CASE WHEN ${pending} THEN p.due_task_id ELSE t.due_task_id END,
        due_at = CASE WHEN ${pending} THEN p.due_at ELSE t.due_at END,
        due_key = CASE WHEN ${pending} THEN p.due_key ELSE t.due_key END
      FROM p
      WHERE t.instance_id = $1
      RETURNING ${notifyWake(l, offers("t"), "t.queue", readyNow("t"))} AS woke`,
  };
}
