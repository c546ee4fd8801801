import type { Tables } from "./layout.js";
import { retention } from "./retention.js";
import { wakeUps } from "./sql-wake-ups.js";

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
    ...control(t),
    ...events(t),
    ...discovery(t),
    ...wakeUps(t),
    ...attempts(t),
    ...steps(t),
    ...retention(t),
  } as const;
}

/**
 * Where a row's task stands, as every write that places it sets it (see schedule.ts, placement):
 * ready (ready_task_id, ready_key: the ready index), due at a time (due_task_id, due_at, due_key:
 * the timer index), or neither (all null).
 */
const placed = `ready_task_id = :ready, ready_key = :readyKey,
        due_task_id = :dueTask, due_at = :dueAt, due_key = :dueKey`;

/** saveSnapshot, saveTaskResult and completeTasks: the writes of a snapshot and of one task result. */
function snapshotWrites(t: Tables) {
  return {
    /** saveSnapshot, saveTaskResult, completeTasks, sendEvent, extendTaskClaim: the stored status, read under the write lock. */
    lockSnapshot: `SELECT status FROM ${t.snapshots} WHERE instance_id = ?`,

    /**
     * saveSnapshot: the snapshot row (the refusals and the consumed event ran before it, under the
     * same lock). :finishedAt is the write clock when the snapshot is finished, else null; a row
     * finished already keeps its first finish time (the refusals let a finished row be saved
     * only finished again).
     */
    upsertSnapshot: `
      INSERT INTO ${t.snapshots}
        (instance_id, header, status, definition_hash, initial_input, last_completed_task_id, updated_at,
         wait_event, wait_task, timeout_at, position_task_id, run_at, priority, queue,
         ready_task_id, ready_key, due_task_id, due_at, due_key, finished_at)
      VALUES (:id, :header, :status, :hash, :input, :last, :updatedAt,
        :waitEvent, :waitTask, :timeoutAt, :position, :runAt, :priority, :queue,
        :ready, :readyKey, :dueTask, :dueAt, :dueKey, :finishedAt)
      ON CONFLICT (instance_id) DO UPDATE SET
        header = excluded.header, status = excluded.status, definition_hash = excluded.definition_hash,
        initial_input = excluded.initial_input, last_completed_task_id = excluded.last_completed_task_id,
        updated_at = excluded.updated_at,
        wait_event = excluded.wait_event, wait_task = excluded.wait_task, timeout_at = excluded.timeout_at,
        position_task_id = excluded.position_task_id, run_at = excluded.run_at,
        priority = excluded.priority, queue = excluded.queue,
        ready_task_id = excluded.ready_task_id, ready_key = excluded.ready_key,
        due_task_id = excluded.due_task_id, due_at = excluded.due_at, due_key = excluded.due_key,
        finished_at = CASE WHEN excluded.finished_at IS NULL THEN NULL
          ELSE coalesce(finished_at, excluded.finished_at) END`,

    /** saveSnapshot, resumeWorkflow: is an event of the wait's name pending (by events_by_name)? */
    eventPending: `SELECT 1 AS found FROM ${t.events} WHERE instance_id = ? AND event_name = ? LIMIT 1`,

    /**
     * saveSnapshot and a step with consumeEvent: deletes the event if it is the oldest pending one of its
     * name. No row deleted: it is not (consumed already, or an older one is pending).
     */
    consumeEvent: `
      DELETE FROM ${t.events}
      WHERE instance_id = :id AND event_name = :name AND sequence = :sequence
        AND sequence = (SELECT min(o.sequence) FROM ${t.events} AS o WHERE o.instance_id = :id AND o.event_name = :name)`,

    /** deleteSnapshot, a saveSnapshot without results, and a terminal step: the instance's results. */
    deleteResults: `DELETE FROM ${t.results} WHERE instance_id = ?`,

    /**
     * saveSnapshot: the stored results the snapshot no longer has (:keep, a JSON array of the task
     * ids it has) go; the others stay untouched (read by key, their outputs are not).
     */
    deleteOtherResults: `
      DELETE FROM ${t.results}
      WHERE instance_id = :id AND task_id NOT IN (SELECT value FROM json_each(:keep))`,

    /** saveTaskResult, completeTasks (with or without a next step): one result row. */
    upsertResult: `
      INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output`,

    /**
     * saveSnapshot, one per result: a new result is inserted, a changed one updated, an unchanged
     * one left alone (no row written, no page dirtied).
     */
    saveResult: `
      INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output
      WHERE output IS NOT excluded.output`,

    /**
     * After a task result: it is the last one, updated_at never goes back, its task is no longer
     * ready nor due, and a wait for it is over (out of the timer index). SET expressions read the old row.
     */
    recordResult: `
      UPDATE ${t.snapshots} SET
        last_completed_task_id = :task,
        updated_at = max(updated_at, :now),
        ready_task_id = CASE WHEN ready_task_id = :task THEN NULL ELSE ready_task_id END,
        ready_key = CASE WHEN ready_task_id = :task THEN NULL ELSE ready_key END,
        due_task_id = CASE WHEN due_task_id = :task THEN NULL ELSE due_task_id END,
        due_at = CASE WHEN due_task_id = :task THEN NULL ELSE due_at END,
        due_key = CASE WHEN due_task_id = :task THEN NULL ELSE due_key END,
        wait_event = CASE WHEN wait_task = :task THEN NULL ELSE wait_event END,
        wait_task = CASE WHEN wait_task = :task THEN NULL ELSE wait_task END,
        timeout_at = CASE WHEN wait_task = :task THEN NULL ELSE timeout_at END
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

    /** deleteSnapshot: the snapshot row, then (deleteResults, deleteClaims, deleteEvents) the rest. */
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

    /** claimTask and sendEvent: the next value of the one counter (fencing tokens, event sequences). */
    nextToken: `UPDATE ${t.tokenSequence} SET last_token = last_token + 1 WHERE id = 1 RETURNING last_token`,

    /** claimTask: the claim row (the live check ran before, under the lock). */
    claimTask: `
      INSERT INTO ${t.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at)
      VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET
        worker_id = excluded.worker_id, token = excluded.token,
        claimed_at = excluded.claimed_at, expires_at = excluded.expires_at`,

    /** releaseTaskClaim and completeTasks (with or without a next step): the claim row goes. */
    releaseClaim: `DELETE FROM ${t.claims} WHERE instance_id = ? AND task_id = ?`,

    /** extendTaskClaim: the new expiry. */
    extendClaim: `UPDATE ${t.claims} SET expires_at = ? WHERE instance_id = ? AND task_id = ?`,
  } as const;
}

/** cancelWorkflow, pauseWorkflow and resumeWorkflow. */
function control(t: Tables) {
  return {
    /** What transitionHeader reads, under the write lock. */
    lockHeader: `
      SELECT header, status, last_completed_task_id FROM ${t.snapshots} WHERE instance_id = ?`,

    /** Does the instance hold a result for this task? (Control ops; a step reads it in readStep.) */
    hasResult: `SELECT 1 AS found FROM ${t.results} WHERE instance_id = ? AND task_id = ?`,

    /**
     * The new header and index fields of a transition (the schedule columns stay: pause keeps the
     * position; position_task_id is the new state's, as saveSnapshot would store it). A cancel
     * passes its clock as :finishedAt (pause and resume null): the workflow's finish time.
     */
    storeTransition: `
      UPDATE ${t.snapshots} SET
        header = :header, status = :status, updated_at = :updatedAt, position_task_id = :position,
        wait_event = :waitEvent, wait_task = :waitTask, timeout_at = :timeoutAt, ${placed},
        finished_at = coalesce(finished_at, :finishedAt)
      WHERE instance_id = :id`,

    /** resumeWorkflow: the schedule the position keeps. */
    lockSchedule: `SELECT run_at, priority FROM ${t.snapshots} WHERE instance_id = ?`,

    /**
     * cancelWorkflow: every claim of the instance not revoked yet gets the epoch as its expiry
     * (:revoked, the kit's REVOKED_EXPIRY), so no clock reading, however far the clock steps back,
     * judges it live again. The rows and their tokens stay: later claims get larger tokens, and
     * the holder may still release its claim.
     */
    revokeClaims: `
      UPDATE ${t.claims} SET expires_at = :revoked
      WHERE instance_id = :id AND (expires_at IS NULL OR expires_at > :revoked)`,

    /** cancelWorkflow, deleteSnapshot, a terminal saveSnapshot or step: the instance's pending events go. */
    deleteEvents: `DELETE FROM ${t.events} WHERE instance_id = ?`,
  } as const;
}

/** sendEvent and loadPendingEvents. */
function events(t: Tables) {
  return {
    /** sendEvent: appends the event (its sequence from nextToken), after the state check. */
    sendEvent: `
      INSERT INTO ${t.events} (instance_id, sequence, event_name, payload, sent_at) VALUES (?, ?, ?, ?, ?)`,

    /**
     * sendEvent: a wait for this name that is not ready yet becomes ready (and leaves the timer
     * index), unless a failure holds it or its retry is not due yet; its readyAt is its task's
     * retryAt after a failure, else its last write.
     */
    wakeWait: `
      UPDATE ${t.snapshots} SET ready_task_id = wait_task,
        ready_key = coalesce(
          (SELECT r.retry_at FROM ${t.attempts} AS r WHERE r.instance_id = :id AND r.task_id = wait_task),
          updated_at
        ) + (priority - 3) * :aging,
        due_task_id = NULL, due_at = NULL, due_key = NULL
      WHERE instance_id = :id AND wait_event = :name AND ready_task_id IS NULL
        AND NOT EXISTS (
          SELECT 1 FROM ${t.attempts} AS a
          WHERE a.instance_id = :id AND a.task_id = wait_task AND (a.held = 1 OR a.retry_at > :now)
        )`,

    /** loadPendingEvents: one row with null event columns when the instance has none; no row when it is missing. */
    loadEvents: `
      SELECT e.event_name, e.sequence, e.payload, e.sent_at
      FROM ${t.snapshots} AS s
      LEFT JOIN ${t.events} AS e ON e.instance_id = s.instance_id
      WHERE s.instance_id = ?
      ORDER BY e.sequence`,
  } as const;
}

/** findAvailableTasks and claimAvailableTasks. */
function discovery(t: Tables) {
  const live = "(c.expires_at IS NULL OR c.expires_at > :now)";
  const unclaimed = (task: string) => `NOT EXISTS (
          SELECT 1 FROM ${t.claims} AS c
          WHERE c.instance_id = s.instance_id AND c.task_id = ${task} AND ${live}
        )`;
  const extras = (task: string) => `s.priority AS priority, s.queue AS queue,
             coalesce(a.count, 0) + 1 AS attempt,
             EXISTS (SELECT 1 FROM ${t.claims} AS x WHERE x.instance_id = s.instance_id AND x.task_id = ${task})
               AS taken_over`;
  const joins = (task: string) => `LEFT JOIN ${t.results} AS r
        ON s.wait_task IS NULL AND r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      LEFT JOIN ${t.attempts} AS a ON a.instance_id = s.instance_id AND a.task_id = ${task}`;
  return {
    /**
     * findAvailableTasks and claimAvailableTasks, for one queue: two index walks merged in
     * (key, instance_id) order (SQLite merges the two ordered arms, no sort): the ready index by
     * ready_key, and the timer index by due_key while due_at <= now (bounded by :horizon = now +
     * 2 x agingMs, the largest due key a due task can have). Both are led by the queue, so other
     * queues cost nothing, and their cost follows the tasks they read (plus the live claims and
     * not-yet-due timers they skip), never the snapshots that are not ready. A wait's task comes
     * with its wait_event and no input: the caller reads its oldest pending event (oldestEvent)
     * in the same transaction; any other task with its input. taken_over: an expired claim is
     * on the task (claiming it is a takeover, one more attempt).
     */
    findAvailable: `
      SELECT s.instance_id AS instance_id, s.ready_task_id AS task_id, s.definition_hash AS definition_hash,
             s.ready_key AS sort_key, s.wait_event AS wait_event,
             CASE WHEN s.wait_task IS NULL THEN coalesce(r.output, s.initial_input, x'') END AS input,
             ${extras("s.ready_task_id")}
      FROM ${t.snapshots} AS s INDEXED BY ${t.readyIndex}
      ${joins("s.ready_task_id")}
      WHERE s.queue = :queue AND s.ready_task_id IS NOT NULL AND ${unclaimed("s.ready_task_id")}
      UNION ALL
      SELECT s.instance_id, s.due_task_id, s.definition_hash, s.due_key, s.wait_event,
             CASE WHEN s.wait_task IS NULL THEN coalesce(r.output, s.initial_input, x'') END,
             ${extras("s.due_task_id")}
      FROM ${t.snapshots} AS s INDEXED BY ${t.timerIndex}
      ${joins("s.due_task_id")}
      WHERE s.queue = :queue AND s.due_key IS NOT NULL AND s.ready_task_id IS NULL
        AND s.due_key <= :horizon AND s.due_at <= :now AND ${unclaimed("s.due_task_id")}
      ORDER BY sort_key, instance_id
      LIMIT :limit`,

    /** A wait's task found by findAvailable: the oldest pending event of its name (by events_by_name). */
    oldestEvent: `
      SELECT sequence, payload FROM ${t.events} WHERE instance_id = ? AND event_name = ?
      ORDER BY sequence LIMIT 1`,
  } as const;
}

/** The attempts of tasks: failTasks, takeovers, and the attempts a snapshot carries. */
function attempts(t: Tables) {
  return {
    /** loadSnapshot: the attempts stored beside the header. */
    loadAttempts: `
      SELECT task_id, count, last_error, last_failed_at, retry_at, held FROM ${t.attempts} WHERE instance_id = ?`,

    /** saveSnapshot (replaced by the snapshot's own) and deleteSnapshot. */
    deleteAttempts: `DELETE FROM ${t.attempts} WHERE instance_id = ?`,

    /** saveSnapshot: one row per task with attempts. */
    insertAttempt: `
      INSERT INTO ${t.attempts} (instance_id, task_id, count, last_error, last_failed_at, retry_at, held)
      VALUES (?, ?, ?, ?, ?, ?, ?)`,

    /** resumeWorkflow: the retry constraint of the position task. */
    taskAttempt: `SELECT retry_at, held FROM ${t.attempts} WHERE instance_id = ? AND task_id = ?`,

    /** failTasks: one more attempt, its error and time, and when it may run again (held: not rescheduled). */
    recordFailure: `
      INSERT INTO ${t.attempts} (instance_id, task_id, count, last_error, last_failed_at, retry_at, held)
      VALUES (:id, :task, 1, :error, :now, :retryAt, :held)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET
        count = count + 1, last_error = excluded.last_error, last_failed_at = excluded.last_failed_at,
        retry_at = excluded.retry_at, held = excluded.held`,

    /** A takeover of an expired claim on the position task: one more attempt (the last error stays). */
    recordTakeover: `
      INSERT INTO ${t.attempts} (instance_id, task_id, count, last_error, last_failed_at, retry_at, held)
      VALUES (?, ?, 1, NULL, NULL, NULL, 0)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET count = count + 1`,

    /** failTasks and claimTask: where the row's task stands, and whether the task has a result. */
    lockPlacement: `
      SELECT s.status, s.ready_task_id, s.due_task_id, s.position_task_id, s.wait_task, s.wait_event,
        s.timeout_at, s.run_at, s.priority, s.updated_at,
        EXISTS (SELECT 1 FROM ${t.results} AS r WHERE r.instance_id = s.instance_id AND r.task_id = :task)
          AS has_result
      FROM ${t.snapshots} AS s WHERE s.instance_id = :id`,

    /** failTasks: the failed task placed again (ready, due at its retryAt, or held in no index). */
    placeTask: `UPDATE ${t.snapshots} SET ${placed} WHERE instance_id = :id`,
  } as const;
}

/** completeTasks with a next step. */
function steps(t: Tables) {
  return {
    /**
     * Everything one step is checked against and placed by, in one statement under the write
     * lock (no output is read): the row's status, header, last completed task and updated_at; the
     * claim on :task; the oldest pending event of :consume (null: no event to consume); whether
     * :task and :next (the next position's task) have a result; whether an event of :wait (the
     * next wait's name) stays pending once the event :consumed is gone; and :next's retry
     * constraint. No row: the instance is missing.
     */
    readStep: `
      SELECT s.status, s.header, s.last_completed_task_id, s.updated_at, s.position_task_id,
        c.token AS claim_token, c.expires_at AS claim_expires_at,
        (SELECT min(e.sequence) FROM ${t.events} AS e
          WHERE e.instance_id = s.instance_id AND e.event_name = :consume) AS oldest,
        EXISTS (SELECT 1 FROM ${t.results} AS r WHERE r.instance_id = s.instance_id AND r.task_id = :task)
          AS has_task,
        EXISTS (SELECT 1 FROM ${t.results} AS r WHERE r.instance_id = s.instance_id AND r.task_id = :next)
          AS has_next,
        EXISTS (SELECT 1 FROM ${t.events} AS e
          WHERE e.instance_id = s.instance_id AND e.event_name = :wait AND e.sequence IS NOT :consumed)
          AS wait_pending,
        a.retry_at AS next_retry_at, a.held AS next_held
      FROM ${t.snapshots} AS s
      LEFT JOIN ${t.claims} AS c ON c.instance_id = s.instance_id AND c.task_id = :task
      LEFT JOIN ${t.attempts} AS a ON a.instance_id = s.instance_id AND a.task_id = :next
      WHERE s.instance_id = :id`,

    /**
     * The header and index fields after a step (the kit's advanceHeader), with the next task's
     * place by the placement rule. definition_hash and initial_input stay. A step to Completed or
     * Failed passes its clock as :finishedAt (else null): the workflow's finish time.
     */
    storeStep: `
      UPDATE ${t.snapshots} SET
        header = :header, status = :status, last_completed_task_id = :last, updated_at = :updatedAt,
        wait_event = :waitEvent, wait_task = :waitTask, timeout_at = :timeoutAt,
        position_task_id = :position, run_at = :runAt, priority = :priority, queue = :queue, ${placed},
        finished_at = coalesce(finished_at, :finishedAt)
      WHERE instance_id = :id`,
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

/** A row of findAvailable: a ready task with its input, or a wait's task (wait_event set, no input). */
export interface ReadyRow {
  instance_id: string;
  task_id: string;
  definition_hash: string;
  sort_key: number;
  wait_event: string | null;
  input: Uint8Array | null;
  priority: number;
  queue: string;
  attempt: number;
  taken_over: number;
}

/** A row of loadAttempts. */
export interface AttemptRow {
  task_id: string;
  count: number;
  last_error: string | null;
  last_failed_at: number | null;
  retry_at: number | null;
  held: number;
}

/** A row of lockPlacement. */
export interface PlacementRow {
  status: string;
  ready_task_id: string | null;
  due_task_id: string | null;
  position_task_id: string | null;
  wait_task: string | null;
  wait_event: string | null;
  timeout_at: number | null;
  run_at: number | null;
  priority: number;
  updated_at: number;
  has_result: number;
}

/** A row of readStep. */
export interface StepRow {
  status: string;
  header: Uint8Array;
  last_completed_task_id: string | null;
  updated_at: number;
  position_task_id: string | null;
  claim_token: number | null;
  claim_expires_at: number | null;
  oldest: number | null;
  has_task: number;
  has_next: number;
  wait_pending: number;
  next_retry_at: number | null;
  next_held: number | null;
}

/** A row of lockHeader. */
export interface HeaderRow {
  header: Uint8Array;
  status: string;
  last_completed_task_id: string | null;
}

/** A row of loadEvents (all null: the instance exists and has no pending event). */
export interface EventRow {
  event_name: string | null;
  sequence: number | null;
  payload: Uint8Array | null;
  sent_at: number | null;
}
