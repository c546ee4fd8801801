/**
 * Where the data lives: one schema holding four tables, a sequence and the migrations table.
 * Every name is quoted, so a schema name may hold any character (quotes included); ids are
 * only ever bound as parameters, never spliced into SQL.
 *
 *   snapshots     one row per instance: encoded header (bytea), initial input, finished, paused,
 *                 cancelled, ready_task_id, updated_at, claimed_until (the lease claim-next puts on the task it
 *                 claims), the wait of an AwaitingEvent position (wait_event, wait_task, timeout_at),
 *                 the schedule (position_task_id, run_at, priority, queue), ready_key (readyAt +
 *                 (priority - 3) x agingMs), the due task (due_task_id, due_at, due_key) and the
 *                 claim claim-next took (claim_task, claim_worker, claim_token, claim_at,
 *                 claim_expires; claim_task null: none) and finished_at (when the workflow first
 *                 became finished, server-clock epoch ms; null while unfinished)
 *   task_attempts one row per (instance, task) with failed runs: count, last_error, last_failed_at,
 *                 retry_at, held (retryAt null: not rescheduled)
 *   task_results  one row per (instance, task): the output (bytea)
 *   claims        one row per (instance, task) claim taken by claimTask (or by claim-next when the
 *                 row's claim slot holds another task's claim, or a claims row is there already):
 *                 worker, fencing token, server-clock timestamps. An (instance, task) has its claim
 *                 in one place at most: a claims row or the snapshot row's slot.
 *   events        one row per pending event: (instance_id, sequence) PK, event_name, payload, sent_at
 *   claim_tokens  global sequence of fencing tokens and event sequences
 */

import { createHash } from "node:crypto";

/** Quotes an identifier for SQL: `"` doubled, wrapped in `"`. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quotes a string literal for SQL (standard_conforming_strings is on since Postgres 9.1). */
export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

export const TABLES = {
  snapshots: "snapshots",
  taskResults: "task_results",
  claims: "claims",
  events: "events",
  attempts: "task_attempts",
  migrations: "sayiir_migrations",
} as const;
export const TOKEN_SEQUENCE = "claim_tokens";
/** The partial index over ready tasks without a lease, (queue, ready_key, instance_id): discovery and claim-next read it in order. */
export const READY_INDEX = "snapshots_ready_idx";
/**
 * The partial index over leased rows (a ready task, or a due wait, that claim-next claimed),
 * (queue, claimed_until): where a queue's expired leases are found.
 */
export const LEASED_INDEX = "snapshots_leased_idx";
/**
 * The partial index over tasks that become ready at a time (a future runAt or retryAt, a wait's
 * timeout), without a lease, (queue, due_key, instance_id, due_at): the timers discovery reads up to now.
 */
export const TIMER_INDEX = "snapshots_timers_idx";
/**
 * The partial index over finished rows by (finished_at, instance_id): purgeFinished reads the
 * oldest finishes first, and unfinished rows are not in it.
 */
export const FINISHED_INDEX = "snapshots_finished_idx";
/** The index over events by (instance, name, sequence): the oldest pending event of a name. */
export const EVENTS_INDEX = "events_by_name_idx";

/** The prefix of a schema's wake-up channel (see wakeChannelFor). */
export const WAKE_CHANNEL_PREFIX = "sayiir_wake_";

/**
 * The NOTIFY channel of a schema's wake-ups: one per schema, its queue as the payload. A channel
 * name is an identifier (at most 63 bytes): the schema name itself when it fits, else a hash of it.
 */
export function wakeChannelFor(schema: string): string {
  const plain = `${WAKE_CHANNEL_PREFIX}${schema}`;
  if (Buffer.byteLength(plain, "utf8") <= 63) return plain;
  return `${WAKE_CHANNEL_PREFIX}${createHash("sha256").update(schema).digest("hex").slice(0, 40)}`;
}

export interface Layout {
  schema: string;
  /** The NOTIFY channel of wake-ups (unquoted). */
  wakeChannel: string;
  /** Quoted schema. */
  s: string;
  snapshots: string;
  taskResults: string;
  claims: string;
  events: string;
  attempts: string;
  migrations: string;
  /** Quoted, qualified sequence name as a regclass literal, for nextval(). */
  tokenSequence: string;
  readyIndex: string;
}

export function layoutFor(schema: string): Layout {
  const s = quoteIdentifier(schema);
  const q = (name: string) => `${s}.${quoteIdentifier(name)}`;
  return {
    schema,
    wakeChannel: wakeChannelFor(schema),
    s,
    snapshots: q(TABLES.snapshots),
    taskResults: q(TABLES.taskResults),
    claims: q(TABLES.claims),
    events: q(TABLES.events),
    attempts: q(TABLES.attempts),
    migrations: q(TABLES.migrations),
    tokenSequence: `${quoteLiteral(q(TOKEN_SEQUENCE))}::regclass`,
    readyIndex: READY_INDEX,
  };
}
