/**
 * What the statements of sql.ts return, row by row, and how calls are split into statements
 * (batches): the shapes the backend and control.ts read.
 */
import {
  type CompletionOutcome,
  type Fence,
  failures,
  type PersistenceError,
  type TaskClaim,
  toBytes,
  type ValidCompletion,
} from "@sayiir/persistence-core";
import {
  extendRefusal,
  REVOKED_EXPIRY,
  releaseRefusal,
  type StoredParts,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import { attemptOf } from "./schedule.js";

/** How much one statement carries: items, and (past its first item) bytes of values. */
export interface BatchBound {
  rows: number;
  bytes: number;
}

/** saveSnapshot's multi-row inserts of task results (bind parameters and message size). */
export const RESULTS_BATCH: BatchBound = { rows: 1000, bytes: 16 * 1024 * 1024 };
/**
 * One completeTasks statement; a larger call runs several, one after another. Items are
 * independent, so each item stays one atomic step either way.
 */
export const COMPLETE_BATCH: BatchBound = { rows: 1000, bytes: 16 * 1024 * 1024 };

/** Splits `items`, in order, into the runs that one statement each carries. */
export function* batches<T>(
  items: readonly T[],
  bound: BatchBound,
  size: (item: T) => number,
): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const n = size(item);
    if (batch.length >= bound.rows || (batch.length > 0 && bytes + n > bound.bytes)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += n;
  }
  if (batch.length > 0) yield batch;
}

/** A row of claimTask and extendClaim: server-clock epoch ms and the token, as text (bigint). */
export interface ClaimRow {
  token: string | null;
  claimed_at: string | null;
  expires_at: string | null;
}

/** A row of lockSnapshot. */
export interface LockRow {
  finished: boolean;
  paused: boolean;
  cancelled: boolean;
}

/** A row of readClaim: the holder, live on the server's clock or not, and a cancelled workflow. */
export interface ReadClaimRow {
  worker_id: string;
  live: boolean;
  cancelled: boolean;
}

/** A row of extendClaim: the renewed claim, and whether its workflow is paused. */
export interface ExtendRow extends ClaimRow {
  paused: boolean;
}

/** What a wait's task carries (null for any other task): its event, or timed_out. */
export interface CarriedColumns {
  event_name: string | null;
  /** bigint as text. */
  event_sequence: string | null;
  timed_out: boolean | null;
  priority: number;
  queue: string;
  /** count + 1 (claimNext: plus one for a takeover). */
  attempt: number;
}

/** A row of claimNext: a candidate, claimed (token set) or not (lost a race, or its row moved on). */
export interface ClaimNextRow extends ClaimRow, CarriedColumns {
  instance_id: string;
  task_id: string;
  definition_hash: string | null;
  input: Buffer | null;
}

/** A row of findAvailable. */
export interface ReadyRow extends CarriedColumns {
  instance_id: string;
  task_id: string;
  definition_hash: string;
  input: Buffer;
  /** An expired claim is on the task (claiming it is a takeover, one more attempt). */
  taken_over: boolean;
}

/** A row of lockHeader. */
export interface HeaderRow {
  header: Buffer;
  last_completed_task_id: string | null;
  /** Server clock, epoch ms as text. */
  now: string;
}

/** A row of sendEvent (none: no snapshot). */
export interface SendRow {
  finished: boolean;
  /** The header, when finished (to name its state in the refusal). */
  header: Buffer | null;
  /** The new event's sequence (bigint as text); null when refused. */
  sequence: string | null;
}

/** A row of loadEvents (all null: the instance exists and has no pending event). */
export interface EventRow {
  event_name: string | null;
  sequence: string | null;
  payload: Buffer | null;
  sent_at: string | null;
}

/** A row of loadSnapshot: kind 0 is the snapshot row (data: header, extra: initial input), kind 1 a result. */
export interface LoadRow {
  kind: number;
  task_id: string | null;
  data: Buffer;
  extra: Buffer | null;
  last_completed_task_id: string | null;
  updated_at: string | null;
  /** kind 2: the attempts of task_id as JSON. */
  attempts: string | null;
}

/**
 * A row of completeTasks, one per item (ord: its 1-based position): found (the instance
 * exists), done (stored and released), fenced (finished instance, and its claim is live with
 * this token).
 */
export interface CompleteRow {
  ord: number;
  found: boolean;
  done: boolean;
  fenced: boolean;
}

const num = (v: string | null): number | null => (v === null ? null : Number(v));

/** The rows of loadSnapshot as the kit's StoredParts (undefined: no snapshot row, NotFound). */
export function storedParts(instanceId: string, rows: readonly LoadRow[]): StoredParts | undefined {
  const head = rows.find((row) => row.kind === 0);
  if (head === undefined) return undefined;
  const results: Array<{ taskId: string; output: Uint8Array }> = [];
  const attempts: Array<ReturnType<typeof attemptOf>> = [];
  for (const row of rows) {
    if (row.kind === 1 && row.task_id !== null)
      results.push({ taskId: row.task_id, output: toBytes(row.data) });
    if (row.kind === 2 && row.task_id !== null && row.attempts !== null)
      attempts.push(attemptOf(row.task_id, row.attempts));
  }
  return {
    instanceId,
    header: toBytes(head.data),
    initialInput: head.extra === null ? null : toBytes(head.extra),
    results,
    lastCompletedTaskId: head.last_completed_task_id,
    updatedAt: Number(head.updated_at),
    ...(attempts.length === 0 ? {} : { attempts }),
  };
}

/** The claim a claimTask, extendClaim or claimNext row describes. */
export function claimOf(instanceId: string, taskId: string, workerId: string, row: ClaimRow): TaskClaim {
  return {
    instanceId,
    taskId,
    workerId,
    claimedAt: num(row.claimed_at) ?? 0,
    expiresAt: num(row.expires_at),
    token: num(row.token) ?? 0,
  };
}

/** What snapshotRefusal checks: the locked row's state and whether checkFence found the fence live. */
export function writeView(row: LockRow | undefined, fence: Fence | undefined, holds: boolean): WriteView {
  return {
    found: row !== undefined,
    finished: row?.finished ?? false,
    cancelled: row?.cancelled ?? false,
    paused: row?.paused ?? false,
    // checkFence judged liveness on the server's clock; the kit then only compares the token.
    claim: fence !== undefined && holds ? { token: fence.token, expiresAt: null } : undefined,
    now: 0,
  };
}

/**
 * One completeTasks row as saveTaskResult's outcome, in resultRefusal's order: a missing
 * instance, then a lost claim, then a finished workflow (fenced: finished, claim live).
 */
export function completionOutcome(row: CompleteRow, c: ValidCompletion): CompletionOutcome {
  if (row.done) return null;
  if (!row.found) return failures.snapshotNotFound(c.instanceId);
  if (row.fenced) return failures.resultsFinal(c.instanceId);
  return failures.fenceRejected(c.instanceId, c);
}

/**
 * Why a release or an extend changed no row, from readClaim's row (the claim and the workflow as
 * found by a second statement): releaseRefusal (none: NotFound; another worker's: ClaimLost), and
 * for an extend extendRefusal's further rules (expired on the server's clock, then a cancelled
 * workflow: ClaimLost). Otherwise this worker's own live claim was not the one the statement could
 * act on: taken again in between (release), or expired meanwhile (extend).
 */
export function claimRefusal(
  which: "release" | "extend",
  instanceId: string,
  taskId: string,
  workerId: string,
  row: ReadClaimRow | undefined,
): PersistenceError {
  if (which === "release" || row === undefined) {
    const claim = row === undefined ? undefined : { workerId: row.worker_id, expiresAt: null };
    return releaseRefusal(instanceId, taskId, claim, workerId) ?? failures.claimedByOther(instanceId, taskId);
  }
  // The server judged liveness: the kit sees a live claim as one without expiry and an expired one
  // as revoked (the epoch), against now = 0.
  const claim = { workerId: row.worker_id, expiresAt: row.live ? null : REVOKED_EXPIRY };
  const status = row.cancelled ? "Cancelled" : undefined;
  return (
    extendRefusal(instanceId, taskId, claim, workerId, 0, status) ?? failures.claimExpired(instanceId, taskId)
  );
}
