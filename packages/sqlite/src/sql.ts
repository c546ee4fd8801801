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
    ...control(t),
    ...events(t),
    ...discovery(t),
  } as const;
}

/**
 * The ready task of a snapshot row as written: the AtTask task (`:ready`), else the wait's task
 * when an event of its name is pending, else null (a wait with a timeout is then in the timer
 * index). The same rule in every write that sets it.
 */
const readyTask = (t: Tables) => `coalesce(:ready, CASE WHEN :waitEvent IS NOT NULL AND EXISTS (
          SELECT 1 FROM ${t.events} AS p WHERE p.instance_id = :id AND p.event_name = :waitEvent
        ) THEN :waitTask END)`;

/** saveSnapshot, saveTaskResult and completeTasks: the writes of a snapshot and of one task result. */
function snapshotWrites(t: Tables) {
  return {
    /** saveSnapshot, saveTaskResult, completeTasks, sendEvent, extendTaskClaim: the stored status, read under the write lock. */
    lockSnapshot: `SELECT status FROM ${t.snapshots} WHERE instance_id = ?`,

    /** saveSnapshot: the snapshot row (the refusals and the consumed event ran before it, under the same lock). */
    upsertSnapshot: `
      INSERT INTO ${t.snapshots}
        (instance_id, header, status, definition_hash, initial_input, last_completed_task_id, ready_task_id,
         updated_at, wait_event, wait_task, timeout_at)
      VALUES (:id, :header, :status, :hash, :input, :last, ${readyTask(t)},
        :updatedAt, :waitEvent, :waitTask, :timeoutAt)
      ON CONFLICT (instance_id) DO UPDATE SET
        header = excluded.header, status = excluded.status, definition_hash = excluded.definition_hash,
        initial_input = excluded.initial_input, last_completed_task_id = excluded.last_completed_task_id,
        ready_task_id = excluded.ready_task_id, updated_at = excluded.updated_at,
        wait_event = excluded.wait_event, wait_task = excluded.wait_task, timeout_at = excluded.timeout_at`,

    /**
     * saveSnapshot with consumeEvent: deletes the event if it is the oldest pending one of its
     * name. No row deleted: it is not (consumed already, or an older one is pending).
     */
    consumeEvent: `
      DELETE FROM ${t.events}
      WHERE instance_id = :id AND event_name = :name AND sequence = :sequence
        AND sequence = (SELECT min(o.sequence) FROM ${t.events} AS o WHERE o.instance_id = :id AND o.event_name = :name)`,

    /** saveSnapshot (the old results) and deleteSnapshot. */
    deleteResults: `DELETE FROM ${t.results} WHERE instance_id = ?`,

    /** saveTaskResult, completeTasks, and saveSnapshot (one row per result). */
    upsertResult: `
      INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output`,

    /**
     * After a task result: it is the last one, updated_at never goes back, its task is no longer
     * ready, and a wait for it is over (out of the timer index). SET expressions read the old row.
     */
    recordResult: `
      UPDATE ${t.snapshots} SET
        last_completed_task_id = :task,
        updated_at = max(updated_at, :now),
        ready_task_id = CASE WHEN ready_task_id = :task THEN NULL ELSE ready_task_id END,
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

    /** releaseTaskClaim and completeTasks: the claim row goes. */
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

    /** Does the instance hold a result for this task? */
    hasResult: `SELECT 1 AS found FROM ${t.results} WHERE instance_id = ? AND task_id = ?`,

    /** The new header and index fields of a transition; the ready task by the rule of upsertSnapshot. */
    storeTransition: `
      UPDATE ${t.snapshots} SET
        header = :header, status = :status, ready_task_id = ${readyTask(t)}, updated_at = :updatedAt,
        wait_event = :waitEvent, wait_task = :waitTask, timeout_at = :timeoutAt
      WHERE instance_id = :id`,

    /**
     * cancelWorkflow: every claim of the instance not revoked yet gets the epoch as its expiry
     * (:revoked, the kit's REVOKED_EXPIRY), so no clock reading, however far the clock steps back,
     * judges it live again. The rows and their tokens stay: later claims get larger tokens, and
     * the holder may still release its claim.
     */
    revokeClaims: `
      UPDATE ${t.claims} SET expires_at = :revoked
      WHERE instance_id = :id AND (expires_at IS NULL OR expires_at > :revoked)`,

    /** cancelWorkflow, deleteSnapshot and a terminal saveSnapshot: the instance's pending events go. */
    deleteEvents: `DELETE FROM ${t.events} WHERE instance_id = ?`,
  } as const;
}

/** sendEvent and loadPendingEvents. */
function events(t: Tables) {
  return {
    /** sendEvent: appends the event (its sequence from nextToken), after the state check. */
    sendEvent: `
      INSERT INTO ${t.events} (instance_id, sequence, event_name, payload, sent_at) VALUES (?, ?, ?, ?, ?)`,

    /** sendEvent: a wait for this name that is not ready yet becomes ready (and leaves the timer index). */
    wakeWait: `
      UPDATE ${t.snapshots} SET ready_task_id = wait_task
      WHERE instance_id = ? AND wait_event = ? AND ready_task_id IS NULL`,

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
  return {
    /**
     * findAvailableTasks and claimAvailableTasks: two index walks merged in (key, instance_id)
     * order (SQLite merges the two ordered arms, no sort): the ready index by updated_at, and the
     * timer index by timeout_at up to now. Their cost follows the tasks they read (plus the live
     * claims they skip), never the snapshots that are not ready. A wait's task comes with its
     * wait_event and no input: the caller reads its oldest pending event (oldestEvent) in the same
     * transaction; any other task with its input.
     */
    findAvailable: `
      SELECT s.instance_id AS instance_id, s.ready_task_id AS task_id, s.definition_hash AS definition_hash,
             s.updated_at AS sort_key, s.wait_event AS wait_event,
             CASE WHEN s.wait_task IS NULL THEN coalesce(r.output, s.initial_input, x'') END AS input
      FROM ${t.snapshots} AS s INDEXED BY ${t.readyIndex}
      LEFT JOIN ${t.results} AS r
        ON s.wait_task IS NULL AND r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      WHERE s.ready_task_id IS NOT NULL AND ${unclaimed("s.ready_task_id")}
      UNION ALL
      SELECT s.instance_id, s.wait_task, s.definition_hash, s.timeout_at, s.wait_event, NULL
      FROM ${t.snapshots} AS s INDEXED BY ${t.timerIndex}
      WHERE s.timeout_at IS NOT NULL AND s.ready_task_id IS NULL AND s.timeout_at <= :now
        AND ${unclaimed("s.wait_task")}
      ORDER BY sort_key, instance_id
      LIMIT :limit`,

    /** A wait's task found by findAvailable: the oldest pending event of its name (by events_by_name). */
    oldestEvent: `
      SELECT sequence, payload FROM ${t.events} WHERE instance_id = ? AND event_name = ?
      ORDER BY sequence LIMIT 1`,
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
  wait_event: string | null;
  input: Uint8Array | null;
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
