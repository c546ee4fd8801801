import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import type { Layout } from "./layout.js";
import { claimStatements } from "./sql-claims.js";
import { candidate, discovery, live, liveInline, ms } from "./sql-discovery.js";
import { finishedAt, retentionStatements } from "./sql-retention.js";
import { attemptStatements, placementSql } from "./sql-schedule.js";
import { notifyWake, offers, readyNow, wakeStatements } from "./sql-wake.js";
import { stepStatements } from "./step.js";

/** The expiry of a revoked claim: the epoch (REVOKED_EXPIRY, in ms) as a timestamptz. */
const revokedExpiry = `to_timestamp(${REVOKED_EXPIRY / 1000})`;

/**
 * Every statement the backend runs, built once per schema and named after the operation it
 * serves; the SQLite adapter names the same statements the same way (see the README, "How the
 * operations work"). Values are always bound parameters.
 */
export function statements(l: Layout, agingMs: number) {
  return {
    ...snapshotWrites(l, agingMs),
    ...snapshotReads(l),
    ...claimStatements(l),
    ...control(l, agingMs),
    ...events(l, agingMs),
    ...discovery(l, agingMs),
    ...completion(l),
    ...stepStatements(l, agingMs),
    ...attemptStatements(l, agingMs),
    ...wakeStatements(l, agingMs),
    ...retentionStatements(l),
  };
}

/** saveSnapshot and saveTaskResult: the writes of a snapshot and of one task result, and their checks. */
function snapshotWrites(l: Layout, agingMs: number) {
  return {
    /**
     * Upsert of the snapshot row; the state guards are in the conflict clause, so they are judged
     * on the locked, latest row, in snapshotRefusal's order: a finished workflow stays finished,
     * over a cancelled one only a Cancelled snapshot is written (a cancel is final, even against a
     * late Completed or Failed), and over a paused one only a Paused or Cancelled one ($13). No row
     * back: refused. Where the task stands follows placementSql (an awaited event already pending
     * makes the wait ready; a future runAt or retryAt puts it in the timer index). The lease
     * stays while the row offers the same task (its claim still holds it). A row that then
     * offers a task without a lease notifies its queue's waiters (sql-wake.ts). A write that
     * makes the workflow finished records its finish time (finishedAt); a finished one keeps it.
     *
     * $1 id, $2 hash, $3 header, $4 initial input, $5 finished, $6 paused, $7 last completed task,
     * $8 AtTask ready task, $9 updated_at, $10 wait event, $11 wait task, $12 timeout_at,
     * $13 writable over Paused, $14 cancelled, $15 position task, $16 run_at, $17 priority,
     * $18 queue, $19 the position task's retryAt, $20 held (its retryAt is null).
     */
    upsertSnapshot: `
      WITH p AS (${placementSql(
        l,
        {
          id: "$1",
          ready: "$8",
          waitEvent: "$10",
          waitTask: "$11",
          timeoutAt: "$12",
          runAt: "$16",
          priority: "$17",
          retry: "$19",
          held: "$20",
          updatedAt: "$9",
        },
        agingMs,
      )})
      INSERT INTO ${l.snapshots} AS t
        (instance_id, definition_hash, header, initial_input, finished, paused, cancelled,
         last_completed_task_id, updated_at, wait_event, wait_task, timeout_at,
         position_task_id, run_at, priority, queue, ready_task_id, ready_key, due_task_id, due_at, due_key,
         finished_at)
      SELECT $1, $2, $3, $4, $5, $6, $14, $7, $9, $10, $11, $12, $15, $16, $17, $18,
             p.ready_task_id, p.ready_key, p.due_task_id, p.due_at, p.due_key, ${finishedAt("$5::boolean", "NULL::bigint")}
      FROM p
      ON CONFLICT (instance_id) DO UPDATE SET
        definition_hash = excluded.definition_hash,
        header = excluded.header,
        initial_input = excluded.initial_input,
        finished = excluded.finished,
        paused = excluded.paused,
        cancelled = excluded.cancelled,
        last_completed_task_id = excluded.last_completed_task_id,
        updated_at = excluded.updated_at,
        wait_event = excluded.wait_event,
        wait_task = excluded.wait_task,
        timeout_at = excluded.timeout_at,
        position_task_id = excluded.position_task_id,
        run_at = excluded.run_at,
        priority = excluded.priority,
        queue = excluded.queue,
        ready_task_id = excluded.ready_task_id,
        ready_key = excluded.ready_key,
        due_task_id = excluded.due_task_id,
        due_at = excluded.due_at,
        due_key = excluded.due_key,
        finished_at = ${finishedAt("excluded.finished", "t.finished_at")},
        claimed_until = CASE WHEN ${candidate("t")} = ${candidate("excluded")} THEN t.claimed_until END
      WHERE NOT (t.finished AND NOT excluded.finished) AND NOT (t.cancelled AND NOT excluded.cancelled)
        AND NOT (t.paused AND NOT $13::boolean)
      RETURNING 1 AS ok, ${notifyWake(l, offers("t"), "t.queue", readyNow("t"))} AS woke`,

    /**
     * saveSnapshot with consumeEvent: deletes the event if it is the oldest pending one of its
     * name. No row deleted: it is not (consumed already, or an older one is pending).
     */
    consumeEvent: `
      DELETE FROM ${l.events} e
      WHERE e.instance_id = $1 AND e.event_name = $2 AND e.sequence = $3
        AND e.sequence = (SELECT min(o.sequence) FROM ${l.events} o WHERE o.instance_id = $1 AND o.event_name = $2)`,

    /** saveSnapshot: the results of tasks not in $2 (the ids the snapshot keeps; empty: all) go. */
    deleteOtherResults: `DELETE FROM ${l.taskResults} WHERE instance_id = $1 AND task_id <> ALL($2::text[])`,

    /**
     * saveSnapshot: the results ($2 task ids, $3 outputs), written only where new or changed (an
     * equal stored output keeps its row version; compared on the server, nothing comes back).
     */
    upsertResults: `
      INSERT INTO ${l.taskResults} AS r (instance_id, task_id, output)
      SELECT $1, u.task_id, u.output FROM unnest($2::text[], $3::bytea[]) AS u(task_id, output)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output
      WHERE r.output IS DISTINCT FROM excluded.output`,

    /**
     * Is the claim a fenced write names live with its token, in the claims table (locked FOR
     * SHARE: a release or takeover waits for the write) or in the snapshot row's claim slot (the
     * caller holds the row's lock already)? A row back: it holds.
     */
    checkFence: `
      WITH c AS (
        SELECT 1 FROM ${l.claims} c
        WHERE c.instance_id = $1 AND c.task_id = $2 AND c.token = $3 AND ${live("c")}
        FOR SHARE
      )
      SELECT 1 FROM c
      UNION ALL
      SELECT 1 FROM ${l.snapshots} t WHERE t.instance_id = $1 AND t.claim_token = $3 AND ${liveInline("t", "$2")}`,

    lockSnapshot: `SELECT finished, paused, cancelled FROM ${l.snapshots} WHERE instance_id = $1 FOR UPDATE`,

    /**
     * failTasks: the batch's snapshot rows locked up front in instance order ("C"), the lock order
     * of completeTasks and of every other batch, so two batches naming the same instances in
     * different orders never deadlock. $1 = the instance ids (text[]).
     */
    lockSnapshots: `
      SELECT instance_id FROM ${l.snapshots} WHERE instance_id = ANY($1::text[])
      ORDER BY instance_id
      FOR UPDATE`,

    upsertResult: `
      INSERT INTO ${l.taskResults} (instance_id, task_id, output) VALUES ($1, $2, $3)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output`,

    /**
     * After a task result: it is the last one, updated_at never goes back, its task is no longer
     * ready nor due (its lease goes), and a wait for it is over (out of the timer index). SET
     * expressions read the old row.
     */
    recordResult: `
      UPDATE ${l.snapshots} SET
        last_completed_task_id = $2,
        updated_at = greatest(updated_at, ${ms("clock_timestamp()")}),
        ready_task_id = CASE WHEN ready_task_id = $2 THEN NULL ELSE ready_task_id END,
        ready_key = CASE WHEN ready_task_id = $2 THEN NULL ELSE ready_key END,
        due_task_id = CASE WHEN due_task_id = $2 THEN NULL ELSE due_task_id END,
        due_at = CASE WHEN due_task_id = $2 THEN NULL ELSE due_at END,
        due_key = CASE WHEN due_task_id = $2 THEN NULL ELSE due_key END,
        claimed_until = CASE WHEN coalesce(ready_task_id, due_task_id) = $2 THEN NULL ELSE claimed_until END,
        wait_event = CASE WHEN wait_task = $2 THEN NULL ELSE wait_event END,
        wait_task = CASE WHEN wait_task = $2 THEN NULL ELSE wait_task END,
        timeout_at = CASE WHEN wait_task = $2 THEN NULL ELSE timeout_at END
      WHERE instance_id = $1`,
  };
}

/** loadSnapshot, deleteSnapshot and listSnapshotsPage. */
function snapshotReads(l: Layout) {
  return {
    /**
     * The whole snapshot in one statement (so one MVCC snapshot): kind 0 is the snapshot row,
     * kind 1 the task results, kind 2 the attempts (as JSON).
     */
    loadSnapshot: `
      SELECT 0 AS kind, NULL::text AS task_id, header AS data, initial_input AS extra,
             last_completed_task_id, updated_at::text AS updated_at, NULL::text AS attempts
      FROM ${l.snapshots} WHERE instance_id = $1
      UNION ALL
      SELECT 1, r.task_id, r.output, NULL, NULL, NULL, NULL
      FROM ${l.taskResults} r
      WHERE r.instance_id = $1 AND EXISTS (SELECT 1 FROM ${l.snapshots} WHERE instance_id = $1)
      UNION ALL
      SELECT 2, a.task_id, NULL, NULL, NULL, NULL,
             json_build_object('count', a.count, 'lastError', a.last_error, 'lastFailedAt', a.last_failed_at,
                               'retryAt', a.retry_at, 'held', a.held)::text
      FROM ${l.attempts} a
      WHERE a.instance_id = $1 AND EXISTS (SELECT 1 FROM ${l.snapshots} WHERE instance_id = $1)`,

    /**
     * Deletes the snapshot and, only if it existed, its results, claims and events. `moved`: the
     * row deleted is not the version this statement's snapshot sees, i.e. a write committed while
     * the delete waited for the row lock (or just before it). Every write of task results or events
     * also writes the snapshot row, so only then can results or events exist that r and e did not
     * see: the caller runs `deleteOrphans` in a new statement.
     */
    deleteSnapshot: `
      WITH d AS (DELETE FROM ${l.snapshots} t WHERE t.instance_id = $1 RETURNING t.ctid AS tid),
      v AS (SELECT t.ctid AS tid FROM ${l.snapshots} t WHERE t.instance_id = $1),
      r AS (DELETE FROM ${l.taskResults} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d)),
      c AS (DELETE FROM ${l.claims} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d)),
      e AS (DELETE FROM ${l.events} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d)),
      a AS (DELETE FROM ${l.attempts} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d))
      SELECT count(*)::int AS n, NOT EXISTS (SELECT 1 FROM d JOIN v ON v.tid = d.tid) AS moved FROM d`,

    /**
     * The results and events a racing write committed after the delete's snapshot. Nothing is
     * removed if the instance exists again (a saveSnapshot that re-created it replaces the results
     * itself, and a re-created instance has no events before its first sendEvent).
     */
    deleteOrphans: `
      WITH r AS (
        DELETE FROM ${l.taskResults} r
        WHERE r.instance_id = $1 AND NOT EXISTS (SELECT 1 FROM ${l.snapshots} t WHERE t.instance_id = $1)
      ),
      a AS (
        DELETE FROM ${l.attempts} a
        WHERE a.instance_id = $1 AND NOT EXISTS (SELECT 1 FROM ${l.snapshots} t WHERE t.instance_id = $1)
      )
      DELETE FROM ${l.events} e
      WHERE e.instance_id = $1 AND NOT EXISTS (SELECT 1 FROM ${l.snapshots} t WHERE t.instance_id = $1)`,

    /** Keyset page over the primary key ("C" collation): ids after the cursor, one extra to know if more follow. */
    listPage: `
      SELECT instance_id FROM ${l.snapshots}
      WHERE $1::text IS NULL OR instance_id > $1::text
      ORDER BY instance_id
      LIMIT $2`,
  };
}

/** cancelWorkflow, pauseWorkflow and resumeWorkflow (each in one transaction). */
function control(l: Layout, agingMs: number) {
  return {
    /** What transitionHeader reads, with the row lock, and the server's clock (epoch ms). */
    lockHeader: `
      SELECT header, last_completed_task_id, ${ms("clock_timestamp()")}::text AS now
      FROM ${l.snapshots} WHERE instance_id = $1
      FOR UPDATE`,

    /** Does the instance hold a result for this task? */
    hasResult: `SELECT 1 AS found FROM ${l.taskResults} WHERE instance_id = $1 AND task_id = $2`,

    /**
     * The new header and index fields of a transition; where the task stands by placementSql, with
     * the schedule the row keeps (run_at, priority) and the stored attempts of the position task.
     * The lease goes (pause and cancel take the row out of every index; resume puts it back
     * without one, and notifies its queue). A cancel records the finish time (finishedAt). $1 id,
     * $2 header, $3 finished, $4 paused, $5 AtTask ready task, $6 updated_at, $7 wait event,
     * $8 wait task, $9 timeout_at, $10 cancelled.
     */
    storeTransition: `
      UPDATE ${l.snapshots} t SET
        header = $2, finished = $3, paused = $4, cancelled = $10,
        finished_at = ${finishedAt("$3::boolean", "t.finished_at")},
        updated_at = $6, wait_event = $7, wait_task = $8, timeout_at = $9, claimed_until = NULL,
        (ready_task_id, ready_key, due_task_id, due_at, due_key) = (${placementSql(
          l,
          {
            id: "$1",
            ready: "$5",
            waitEvent: "$7",
            waitTask: "$8",
            timeoutAt: "$9",
            runAt: "t.run_at",
            priority: "t.priority",
            retry: `(SELECT a.retry_at FROM ${l.attempts} a WHERE a.instance_id = $1 AND a.task_id = coalesce($5::text, $8::text))`,
            held: `(SELECT a.held FROM ${l.attempts} a WHERE a.instance_id = $1 AND a.task_id = coalesce($5::text, $8::text))`,
            updatedAt: "$6",
          },
          agingMs,
        )})
      WHERE t.instance_id = $1
      RETURNING ${notifyWake(l, offers("t"), "t.queue", readyNow("t"))} AS woke`,

    /**
     * cancelWorkflow: every claim of the instance not revoked yet gets the epoch as its expiry
     * (the kit's REVOKED_EXPIRY), not the clock's now: no later reading of the server's clock,
     * even one stepped back, judges it live again. The rows and their tokens stay: later claims
     * get larger tokens, and the holder may still release its claim. The claim in the snapshot
     * row's slot is revoked the same way.
     */
    revokeClaims: `
      WITH t AS (
        UPDATE ${l.snapshots} SET claim_expires = ${revokedExpiry}
        WHERE instance_id = $1 AND claim_task IS NOT NULL
          AND (claim_expires IS NULL OR claim_expires > ${revokedExpiry})
      )
      UPDATE ${l.claims} SET expires_at = ${revokedExpiry}
      WHERE instance_id = $1 AND (expires_at IS NULL OR expires_at > ${revokedExpiry})`,

    /** cancelWorkflow and a terminal saveSnapshot: the instance's pending events go. */
    deleteEvents: `DELETE FROM ${l.events} WHERE instance_id = $1`,
  };
}

/** sendEvent and loadPendingEvents. */
function events(l: Layout, agingMs: number) {
  /** A wait for this event that is not ready yet wakes, unless a failure holds it or its retry is not due. */
  const wake = `(t.wait_event = $2 AND t.ready_task_id IS NULL AND NOT EXISTS (
          SELECT 1 FROM ${l.attempts} a WHERE a.instance_id = $1 AND a.task_id = t.wait_task
            AND (a.held OR a.retry_at > ${ms("clock_timestamp()")})))`;
  return {
    /**
     * sendEvent in one statement: locks the snapshot row (s); unless the workflow is finished,
     * appends the event (e) with the next value of the token sequence, drawn after the lock so
     * that sequences of one instance increase in commit order, and the server's clock as sent_at;
     * and (u) writes the row: a wait for this name that is not ready yet becomes ready (it leaves
     * the timer index) and its queue is notified. The row is written even when nothing in it
     * changes, so that a racing deleteSnapshot sees it moved and removes the event (see
     * deleteSnapshot). No row back: no snapshot. A finished workflow gets no event; its header
     * comes back to name its state.
     */
    sendEvent: `
      WITH s AS (
        SELECT t.finished, CASE WHEN t.finished THEN t.header END AS header,
               ${wake} AND t.claimed_until IS NULL AS wakes, t.queue
        FROM ${l.snapshots} t WHERE t.instance_id = $1
        FOR UPDATE
      ),
      e AS (
        INSERT INTO ${l.events} (instance_id, sequence, event_name, payload, sent_at)
        SELECT $1, nextval(${l.tokenSequence}), $2, $3, ${ms("clock_timestamp()")}
        FROM s WHERE NOT s.finished
        RETURNING sequence
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          ready_task_id = CASE WHEN ${wake} THEN t.wait_task ELSE t.ready_task_id END,
          ready_key = CASE WHEN ${wake} THEN coalesce(
              (SELECT r.retry_at FROM ${l.attempts} r WHERE r.instance_id = $1 AND r.task_id = t.wait_task),
              t.updated_at
            ) + (t.priority - 3) * ${agingMs} ELSE t.ready_key END,
          due_task_id = CASE WHEN ${wake} THEN NULL ELSE t.due_task_id END,
          due_at = CASE WHEN ${wake} THEN NULL ELSE t.due_at END,
          due_key = CASE WHEN ${wake} THEN NULL ELSE t.due_key END
        FROM s
        WHERE t.instance_id = $1 AND NOT s.finished
      )
      SELECT s.finished, s.header, (SELECT e.sequence::text FROM e) AS sequence,
             ${notifyWake(l, "s.wakes AND NOT s.finished", "s.queue", "TRUE")} AS woke
      FROM s`,

    /** loadPendingEvents: one row with null event columns when the instance has none; no row when it is missing. */
    loadEvents: `
      SELECT e.event_name, e.sequence::text AS sequence, e.payload, e.sent_at::text AS sent_at
      FROM ${l.snapshots} s
      LEFT JOIN ${l.events} e ON e.instance_id = s.instance_id
      WHERE s.instance_id = $1
      ORDER BY e.sequence`,
  };
}

/** completeTasks. */
function completion(l: Layout) {
  return {
    /**
     * completeTasks for a whole batch in one statement (so one transaction): $1..$4 are the
     * parallel arrays of instance ids, task ids, tokens and outputs. Per item, the rules of a
     * fenced saveTaskResult plus the release of its claim:
     *
     * - s locks the batch's snapshot rows in instance order before any claim row is touched: the
     *   lock order of every other write and of any other batch, so no deadlock. Locking yields
     *   the latest version of each row, so `finished` is judged on it.
     * - d releases the claim of each item whose instance exists and is not finished, if it still
     *   holds the item's token and is live on the server clock: dc deletes it from the claims
     *   table (the delete is the fence check and the release in one: a claim released, taken over
     *   or expired meanwhile is re-checked on its latest version and left alone), ds finds it in
     *   the locked row's claim slot (u empties the slot).
     * - r upserts the results and u updates each snapshot once, for the items d released only:
     *   lastCompletedTaskId = the last of them in input order, updated_at never goes back, the
     *   ready task (and its lease) goes if one of them completed it, and so does a wait for one.
     * - f tells CONFLICT from CLAIM_LOST for items of finished instances: their claim is only
     *   checked (a claims row share-locked, as a fenced write does), never released.
     *
     * One row per item comes back: found (the instance exists), done (stored and released),
     * fenced (finished instance, and its claim is live with this token).
     *
     * `(SELECT $1)` hides the array's length from the planner: a plan made for the actual
     * length costs less than the prepared generic one for small batches, and the server would
     * then plan every call again. This way both plans estimate alike and the generic one stays.
     */
    completeTasks: `
      WITH i AS (
        SELECT u.instance_id COLLATE "C" AS instance_id, u.task_id COLLATE "C" AS task_id, u.token, u.output, u.ord
        FROM unnest((SELECT $1::text[]), $2::text[], $3::bigint[], $4::bytea[])
          WITH ORDINALITY AS u(instance_id, task_id, token, output, ord)
      ),
      s AS (
        SELECT t.instance_id, t.finished, t.claim_task, t.claim_token,
               (t.claim_expires IS NULL OR t.claim_expires > clock_timestamp()) AS slot_live
        FROM ${l.snapshots} t
        WHERE t.instance_id = ANY((SELECT $1::text[])::text[])
        ORDER BY t.instance_id
        FOR UPDATE
      ),
      dc AS (
        DELETE FROM ${l.claims} c
        USING i, s
        WHERE s.instance_id = i.instance_id AND NOT s.finished
          AND c.instance_id = i.instance_id AND c.task_id = i.task_id AND c.token = i.token AND ${live("c")}
        RETURNING i.ord, i.instance_id, i.task_id, i.output, false AS slot
      ),
      ds AS (
        SELECT DISTINCT ON (i.instance_id, i.task_id) i.ord, i.instance_id, i.task_id, i.output, true AS slot
        FROM i JOIN s ON s.instance_id = i.instance_id
        WHERE NOT s.finished AND s.claim_task = i.task_id AND s.claim_token = i.token AND s.slot_live
        ORDER BY i.instance_id, i.task_id, i.ord
      ),
      d AS (SELECT * FROM dc UNION ALL SELECT * FROM ds),
      r AS (
        INSERT INTO ${l.taskResults} (instance_id, task_id, output)
        SELECT d.instance_id, d.task_id, d.output FROM d
        ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output
      ),
      x AS (
        SELECT d.instance_id, array_agg(d.task_id ORDER BY d.ord DESC) AS tasks, bool_or(d.slot) AS slot
        FROM d GROUP BY d.instance_id
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          last_completed_task_id = x.tasks[1],
          updated_at = greatest(t.updated_at, ${ms("clock_timestamp()")}),
          ready_task_id = CASE WHEN t.ready_task_id = ANY(x.tasks) THEN NULL ELSE t.ready_task_id END,
          ready_key = CASE WHEN t.ready_task_id = ANY(x.tasks) THEN NULL ELSE t.ready_key END,
          due_task_id = CASE WHEN t.due_task_id = ANY(x.tasks) THEN NULL ELSE t.due_task_id END,
          due_at = CASE WHEN t.due_task_id = ANY(x.tasks) THEN NULL ELSE t.due_at END,
          due_key = CASE WHEN t.due_task_id = ANY(x.tasks) THEN NULL ELSE t.due_key END,
          claimed_until = CASE WHEN ${candidate("t")} = ANY(x.tasks) THEN NULL ELSE t.claimed_until END,
          wait_event = CASE WHEN t.wait_task = ANY(x.tasks) THEN NULL ELSE t.wait_event END,
          wait_task = CASE WHEN t.wait_task = ANY(x.tasks) THEN NULL ELSE t.wait_task END,
          timeout_at = CASE WHEN t.wait_task = ANY(x.tasks) THEN NULL ELSE t.timeout_at END,
          claim_task = CASE WHEN x.slot THEN NULL ELSE t.claim_task END,
          claim_worker = CASE WHEN x.slot THEN NULL ELSE t.claim_worker END,
          claim_token = CASE WHEN x.slot THEN NULL ELSE t.claim_token END,
          claim_at = CASE WHEN x.slot THEN NULL ELSE t.claim_at END,
          claim_expires = CASE WHEN x.slot THEN NULL ELSE t.claim_expires END
        FROM x
        WHERE t.instance_id = x.instance_id
      ),
      fc AS (
        SELECT i.ord FROM i
        JOIN s ON s.instance_id = i.instance_id AND s.finished
        JOIN ${l.claims} c ON c.instance_id = i.instance_id AND c.task_id = i.task_id AND c.token = i.token
        WHERE ${live("c")}
        FOR SHARE OF c
      ),
      f AS (
        SELECT fc.ord FROM fc
        UNION ALL
        SELECT i.ord FROM i JOIN s ON s.instance_id = i.instance_id AND s.finished
        WHERE s.claim_task = i.task_id AND s.claim_token = i.token AND s.slot_live
      )
      SELECT i.ord::int AS ord, s.instance_id IS NOT NULL AS found, d.ord IS NOT NULL AS done, f.ord IS NOT NULL AS fenced
      FROM i
      LEFT JOIN s ON s.instance_id = i.instance_id
      LEFT JOIN d ON d.ord = i.ord
      LEFT JOIN f ON f.ord = i.ord`,
  };
}

export type Statements = ReturnType<typeof statements>;
