/**
 * Workflow control (cancel, pause, resume) and events (send, load, consume), and what a wait's
 * task carries. Each function sends its statements through the backend's one send point (`Db`),
 * on one connection: the control operations inside the caller's transaction.
 */
import {
  type AvailableTask,
  type ControlRequest,
  decodeSnapshotHeader,
  type EventRef,
  failures,
  type PendingEvent,
  positionTaskId,
  toBytes,
} from "@sayiir/persistence-core";
import {
  consumeRefusal,
  controlRefusal,
  type StoredSnapshot,
  type StoredStatus,
  type Transition,
  transitionHeader,
} from "@sayiir/persistence-core/adapter";
import type pg from "pg";
import type { FixedKey } from "./prepared.js";
import type { CarriedColumns, EventRow, HeaderRow, SendRow } from "./rows.js";

/** Sends one fixed statement of sql.ts on the connection at hand. */
export type Db = <R extends pg.QueryResultRow>(
  key: FixedKey,
  values: unknown[],
) => Promise<pg.QueryResult<R>>;

export const toBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * The bind values of the ready rule and the wait columns, in the order upsertSnapshot and
 * storeTransition take them: the AtTask ready task, then (wait event, wait task, timeout_at) of
 * an InProgress AwaitingEvent position.
 */
export function waitValues(
  awaiting: StoredSnapshot["awaiting"],
): [string | null, string | null, number | null] {
  return [awaiting?.eventName ?? null, awaiting?.nextTaskId ?? null, awaiting?.timeoutAt ?? null];
}

/** May this status be written over a stored Paused snapshot (the upsert's guard)? */
export function writableOverPaused(status: StoredStatus): boolean {
  return status === "Paused" || status === "Cancelled";
}

/**
 * The state and the position's task of a stored header (outputs are not read: it is decoded
 * without results). A header that does not decode gives a SerializationError naming the instance.
 */
export function storedState(instanceId: string, header: Uint8Array) {
  const state = decodeSnapshotHeader(header, instanceId, { results: [], lastCompletedTaskId: null }).state;
  const position = state.kind === "InProgress" || state.kind === "Paused" ? state.position : undefined;
  return { status: state.kind, positionTask: position === undefined ? null : positionTaskId(position) };
}

/**
 * cancelWorkflow, pauseWorkflow, resumeWorkflow, inside one transaction: the row locked with the
 * server's clock (lockHeader), the state check (controlRefusal), the new header and index fields
 * (transitionHeader, asking hasResult for the position's task only), and for a cancel the pending
 * events dropped and every claim of the instance revoked (expiry set to the epoch, rows and tokens
 * kept).
 */
export async function transition(
  db: Db,
  which: Transition,
  instanceId: string,
  request: Required<ControlRequest>,
): Promise<void> {
  const row = (await db<HeaderRow>("lockHeader", [instanceId])).rows[0];
  if (row === undefined) throw failures.snapshotNotFound(instanceId);
  const header = toBytes(row.header);
  const before = storedState(instanceId, header);
  const refusal = controlRefusal(which, instanceId, before.status);
  if (refusal !== null) throw refusal;
  const task = before.positionTask;
  const hasIt = task !== null && ((await db("hasResult", [instanceId, task])).rowCount ?? 0) > 0;
  const next = transitionHeader(
    which,
    {
      instanceId,
      header,
      lastCompletedTaskId: row.last_completed_task_id,
      hasResult: (taskId) => taskId === task && hasIt,
    },
    request,
    Number(row.now),
  );
  await db("storeTransition", [
    instanceId,
    toBuffer(next.header),
    next.finished,
    next.paused,
    next.readyTaskId,
    next.updatedAt,
    ...waitValues(next.awaiting),
    next.status === "Cancelled",
  ]);
  if (which === "cancel") {
    await db("deleteEvents", [instanceId]);
    await db("revokeClaims", [instanceId]);
  }
}

/** sendEvent: one statement (see sql.ts); the refusal is controlRefusal's, on the state it found. */
export async function sendEvent(
  db: Db,
  instanceId: string,
  eventName: string,
  payload: Uint8Array,
): Promise<number> {
  const row = (await db<SendRow>("sendEvent", [instanceId, eventName, toBuffer(payload)])).rows[0];
  if (row === undefined) throw failures.snapshotNotFound(instanceId);
  if (row.sequence !== null) return Number(row.sequence);
  // Refused: the workflow is finished, and its header (sent back then) names its state.
  const status = storedState(instanceId, toBytes(row.header ?? new Uint8Array())).status;
  throw controlRefusal("sendEvent", instanceId, status) ?? failures.eventsClosed(instanceId, status);
}

/** loadPendingEvents: oldest first; NotFound when the instance is missing. */
export async function loadPendingEvents(db: Db, instanceId: string): Promise<PendingEvent[]> {
  const rows = (await db<EventRow>("loadEvents", [instanceId])).rows;
  if (rows.length === 0) throw failures.snapshotNotFound(instanceId);
  const events: PendingEvent[] = [];
  for (const row of rows) {
    if (row.sequence === null || row.event_name === null || row.payload === null) continue;
    events.push({
      eventName: row.event_name,
      sequence: Number(row.sequence),
      payload: toBytes(row.payload),
      sentAt: Number(row.sent_at),
    });
  }
  return events;
}

/**
 * saveSnapshot's consumeEvent, after the fence and state checks, in its transaction: deletes the
 * event if it is the oldest pending one of its name, else refuses (consumeRefusal: Conflict).
 */
export async function consumeEvent(db: Db, instanceId: string, event: EventRef): Promise<void> {
  const r = await db("consumeEvent", [instanceId, event.eventName, event.sequence]);
  const refusal = consumeRefusal(instanceId, event, r.rowCount === 1 ? event.sequence : undefined);
  if (refusal !== null) throw refusal;
}

/** A discovery row's task: a wait's task carries its event, or timedOut. */
export function availableTask(
  row: CarriedColumns & {
    instance_id: string;
    task_id: string;
    definition_hash: string;
    input: Buffer;
    taken_over?: boolean;
  },
): AvailableTask {
  const task: AvailableTask = {
    instanceId: row.instance_id,
    taskId: row.task_id,
    input: toBytes(row.input),
    workflowDefinitionHash: row.definition_hash,
    // Claim-next's statement counts a takeover in `attempt` itself; discovery's row says only
    // that an expired claim is on the task, which is not an attempt until it is taken over.
    attempt: Number(row.attempt),
    priority: Number(row.priority),
    queue: row.queue,
  };
  if (row.event_sequence !== null && row.event_name !== null) {
    task.event = { eventName: row.event_name, sequence: Number(row.event_sequence) };
  } else if (row.timed_out === true) {
    task.timedOut = true;
  }
  return task;
}
