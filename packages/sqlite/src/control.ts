/**
 * Workflow control (cancel, pause, resume) and events (send, load, consume), and the wait fields
 * every write stores. Each function runs inside the caller's BEGIN IMMEDIATE transaction, with
 * the clock reading taken under the write lock; a thrown refusal rolls everything back.
 */
import {
  type AvailableTask,
  type ControlRequest,
  EMPTY_BYTES,
  type EventRef,
  failures,
  type PendingEvent,
  toBytes,
} from "@sayiir/persistence-core";
import {
  consumeRefusal,
  controlRefusal,
  REVOKED_EXPIRY,
  type StoredSnapshot,
  type Transition,
  transitionHeader,
} from "@sayiir/persistence-core/adapter";
import { type Status, statusOf, storedStatusOf } from "./layout.js";
import type { Queries, Row } from "./queries.js";
import { eventPending, placement, placementParams, storedRetry } from "./schedule.js";
import type { EventRow, HeaderRow, ReadyRow } from "./sql.js";

/** The wait columns (upsertSnapshot, storeTransition): the wait of an InProgress AwaitingEvent position. */
export function waitParams(awaiting: StoredSnapshot["awaiting"]): Row {
  return {
    waitEvent: awaiting?.eventName ?? null,
    waitTask: awaiting?.nextTaskId ?? null,
    timeoutAt: awaiting?.timeoutAt ?? null,
  };
}

/** The stored status of a snapshots.status value. */
export function storedStatus(status: string | undefined) {
  return status === undefined ? undefined : storedStatusOf[status as Status];
}

/**
 * cancelWorkflow, pauseWorkflow, resumeWorkflow: the state check (controlRefusal), the new header
 * and index fields (transitionHeader, without reading any output), and for a cancel the pending
 * events dropped and every claim of the instance revoked (expiry set to the epoch, rows and tokens
 * kept).
 */
export function transition(
  q: Queries,
  which: Transition,
  instanceId: string,
  request: Required<ControlRequest>,
  now: number,
  agingMs: number,
): void {
  const row = q.get<HeaderRow>("lockHeader", instanceId);
  const refusal = controlRefusal(which, instanceId, storedStatus(row?.status));
  if (refusal !== null) throw refusal;
  const stored = row as HeaderRow; // controlRefusal refuses a missing snapshot
  const next = transitionHeader(
    which,
    {
      instanceId,
      header: toBytes(stored.header),
      lastCompletedTaskId: stored.last_completed_task_id,
      hasResult: (taskId) => q.get("hasResult", instanceId, taskId) !== undefined,
    },
    request,
    now,
  );
  const schedule = q.get<{ run_at: number | null; priority: number }>("lockSchedule", instanceId);
  const task = next.readyTaskId ?? next.awaiting?.nextTaskId ?? null;
  const placed = placement(
    {
      readyTaskId: next.readyTaskId,
      awaiting: next.awaiting,
      eventPending: eventPending(q, instanceId, next.awaiting?.eventName),
      runAt: schedule?.run_at ?? null,
      priority: schedule?.priority ?? 3,
      retry: storedRetry(q, instanceId, task),
      updatedAt: next.updatedAt,
    },
    now,
    agingMs,
  );
  q.runNamed("storeTransition", {
    id: instanceId,
    header: next.header,
    status: statusOf[next.status],
    updatedAt: next.updatedAt,
    position: next.positionTaskId ?? next.awaiting?.nextTaskId ?? null,
    ...waitParams(next.awaiting),
    ...placementParams(placed),
    finishedAt: which === "cancel" ? now : null,
  });
  if (which === "cancel") {
    q.run("deleteEvents", instanceId);
    q.runNamed("revokeClaims", { id: instanceId, revoked: REVOKED_EXPIRY });
  }
}

/**
 * sendEvent: the state check, the event appended with the next value of the counter (so
 * sequences increase per instance, whatever the name) and the write clock as sentAt, and a wait
 * for this name woken (made ready). Returns the sequence.
 */
export function sendEvent(
  q: Queries,
  instanceId: string,
  eventName: string,
  payload: Uint8Array,
  now: number,
  agingMs: number,
): number {
  const row = q.get<{ status: string }>("lockSnapshot", instanceId);
  const refusal = controlRefusal("sendEvent", instanceId, storedStatus(row?.status));
  if (refusal !== null) throw refusal;
  const sequence = q.nextToken();
  q.run("sendEvent", instanceId, sequence, eventName, payload, now);
  q.runNamed("wakeWait", { id: instanceId, name: eventName, aging: agingMs, now });
  return sequence;
}

/** loadPendingEvents: oldest first; NotFound when the instance is missing. */
export function loadPendingEvents(q: Queries, instanceId: string): PendingEvent[] {
  const rows = q.all<EventRow>("loadEvents", instanceId);
  if (rows.length === 0) throw failures.snapshotNotFound(instanceId);
  const events: PendingEvent[] = [];
  for (const row of rows) {
    if (row.sequence === null || row.event_name === null || row.payload === null) continue;
    events.push({
      eventName: row.event_name,
      sequence: row.sequence,
      payload: toBytes(row.payload),
      sentAt: row.sent_at ?? 0,
    });
  }
  return events;
}

/**
 * saveSnapshot's consumeEvent, after the fence and state checks: deletes the event if it is the
 * oldest pending one of its name, else refuses (consumeRefusal: Conflict, nothing written).
 */
export function consumeEvent(q: Queries, instanceId: string, event: EventRef): void {
  const consumed = q.runNamed("consumeEvent", {
    id: instanceId,
    name: event.eventName,
    sequence: event.sequence,
  });
  const refusal = consumeRefusal(instanceId, event, consumed === 1 ? event.sequence : undefined);
  if (refusal !== null) throw refusal;
}

/**
 * A findAvailable row as discovery returns it. A wait's task carries the oldest pending event of
 * its name (its payload is the input), read here in the caller's transaction, or with none
 * pending (its timeout passed) `timedOut` and empty input.
 */
export function availableTask(q: Queries, row: ReadyRow): AvailableTask {
  const task: AvailableTask = {
    instanceId: row.instance_id,
    taskId: row.task_id,
    input: EMPTY_BYTES,
    workflowDefinitionHash: row.definition_hash,
    attempt: row.attempt + row.taken_over,
    priority: row.priority,
    queue: row.queue,
  };
  if (row.wait_event === null) {
    task.input = toBytes(row.input ?? EMPTY_BYTES);
    return task;
  }
  const event = q.get<{ sequence: number; payload: Uint8Array }>(
    "oldestEvent",
    row.instance_id,
    row.wait_event,
  );
  if (event === undefined) {
    task.timedOut = true;
  } else {
    task.input = toBytes(event.payload);
    task.event = { eventName: row.wait_event, sequence: event.sequence };
  }
  return task;
}
