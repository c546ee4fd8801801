import type { StoredStatus } from "@sayiir/persistence-core/adapter";

/*
 * Storage layout. Every name is `<tablePrefix><name>`, quoted as an SQL identifier; ids are only
 * ever bound as parameters (TEXT, BINARY collation), never spliced into SQL.
 *
 *   <p>schema_version  (id = 1, version)                 the applied migration
 *   <p>token_sequence  (id = 1, last_token)              one global counter: fencing tokens and
 *                                                        event sequences
 *   <p>snapshots       (instance_id PK, header, status, definition_hash, initial_input,
 *                       last_completed_task_id, ready_task_id, updated_at,
 *                       wait_event, wait_task, timeout_at,
 *                       position_task_id, run_at, priority, queue,
 *                       ready_key, due_task_id, due_at, due_key, finished_at)
 *   <p>results         (instance_id, task_id, output)    PK (instance_id, task_id)
 *   <p>claims          (instance_id, task_id, worker_id, token, claimed_at, expires_at)
 *                                                        PK (instance_id, task_id)
 *   <p>events          (instance_id, sequence, event_name, payload, sent_at)
 *                                                        PK (instance_id, sequence)
 *   <p>task_attempts   (instance_id, task_id, count, last_error, last_failed_at, retry_at, held)
 *                                                        PK (instance_id, task_id); held = 1: retryAt
 *                                                        null (held), else retry_at (null: absent)
 *   <p>snapshots_ready  partial index on snapshots (queue, ready_key, instance_id)
 *                       WHERE ready_task_id IS NOT NULL: the ready tasks discovery walks, per queue,
 *                       by ready key = readyAt + (priority - 3) x agingMs
 *   <p>snapshots_timers partial index on snapshots (queue, due_key, instance_id, due_at)
 *                       WHERE due_key IS NOT NULL AND ready_task_id IS NULL: the tasks that become
 *                       ready at a time (a future runAt or retryAt, a wait's timeout), per queue, by
 *                       due key = due_at + (priority - 3) x agingMs, read while due_at <= now
 *   <p>events_by_name  index on events (instance_id, event_name, sequence): the oldest pending
 *                       event of a name
 *   <p>snapshots_finished partial index on snapshots (finished_at, instance_id)
 *                       WHERE finished_at IS NOT NULL: the finished workflows purgeFinished walks,
 *                       oldest finish first (finished_at: this machine's clock when a write first
 *                       made the workflow Completed, Failed or Cancelled; see retention.ts)
 */

export interface Tables {
  schemaVersion: string;
  tokenSequence: string;
  snapshots: string;
  results: string;
  claims: string;
  events: string;
  attempts: string;
  readyIndex: string;
  timerIndex: string;
  eventsByName: string;
  finishedIndex: string;
  /** Migration 2 builds the new snapshots table under this name, then renames it. */
  snapshotsRebuild: string;
}

/** Quotes an identifier; the prefix is validated already, so this is belt and braces. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function tableNames(prefix: string): Tables {
  const q = (name: string) => quoteIdentifier(prefix + name);
  return {
    schemaVersion: q("schema_version"),
    tokenSequence: q("token_sequence"),
    snapshots: q("snapshots"),
    results: q("results"),
    claims: q("claims"),
    events: q("events"),
    attempts: q("task_attempts"),
    readyIndex: q("snapshots_ready"),
    timerIndex: q("snapshots_timers"),
    eventsByName: q("events_by_name"),
    finishedIndex: q("snapshots_finished"),
    snapshotsRebuild: q("snapshots_rebuild"),
  };
}

/** Values of snapshots.status. */
export const Status = {
  InProgress: "in_progress",
  Paused: "paused",
  Cancelled: "cancelled",
  Completed: "completed",
  Failed: "failed",
} as const;
export type Status = (typeof Status)[keyof typeof Status];

/** The snapshots.status value of each stored status (toStoredSnapshot's `status`). */
export const statusOf: Readonly<Record<StoredStatus, Status>> = {
  InProgress: Status.InProgress,
  Paused: Status.Paused,
  Cancelled: Status.Cancelled,
  Completed: Status.Completed,
  Failed: Status.Failed,
};

/** The stored status a snapshots.status value stands for (the inverse of statusOf). */
export const storedStatusOf: Readonly<Record<Status, StoredStatus>> = {
  [Status.InProgress]: "InProgress",
  [Status.Paused]: "Paused",
  [Status.Cancelled]: "Cancelled",
  [Status.Completed]: "Completed",
  [Status.Failed]: "Failed",
};
