/**
 * completeTasks with `next`: one workflow step, inside the caller's BEGIN IMMEDIATE transaction
 * (the whole batch is one), with the clock reading taken under the write lock. One statement
 * reads what the step is checked against (readStep: never an output), then the writes: this
 * task's result (or, on a terminal step, no result and no event left), the header and index
 * fields (storeStep), the consumed event and the claim released.
 */
import {
  type CompletionOutcome,
  decodeSnapshotHeader,
  ErrorCode,
  isPersistenceError,
  type NextStep,
  type PersistenceError,
  positionTaskId,
  toBytes,
  type ValidCompletion,
} from "@sayiir/persistence-core";
import {
  advanceHeader,
  fenceHolds,
  type StepView,
  type StepWrite,
  type StoredClaimView,
  stepRefusal,
} from "@sayiir/persistence-core/adapter";
import { waitParams } from "./control.js";
import { Status, statusOf } from "./layout.js";
import type { Queries } from "./queries.js";
import { type Placement, placement, placementParams } from "./schedule.js";
import type { StepRow } from "./sql.js";

/** The task a next step makes ready or waits for (null: Completed or Failed). */
function nextTaskOf(next: NextStep): string | null {
  return next.kind === "AtTask" ? next.taskId : next.kind === "AwaitingEvent" ? next.nextTaskId : null;
}

/**
 * The task the stored InProgress position runs, from the header: AtTask's task or a wait's next
 * task, whether or not it has a result (the core README's rule); null when not InProgress.
 */
function positionTask(row: StepRow, instanceId: string): string | null {
  if (row.status !== Status.InProgress) return null;
  const state = decodeSnapshotHeader(toBytes(row.header), instanceId, {
    results: [],
    lastCompletedTaskId: null,
  }).state;
  return state.kind === "InProgress" ? positionTaskId(state.position) : null;
}

/** The stored claim on the completed task, as the kit's fence check reads it. */
function claimOf(row: StepRow): StoredClaimView {
  return row.claim_token === null ? undefined : { token: row.claim_token, expiresAt: row.claim_expires_at };
}

/**
 * The checks of one step in the contract's order (stepRefusal) on what readStep gave. The header
 * is decoded for the position only when the earlier checks pass (found, fence held, InProgress).
 */
function refusalOf(c: ValidCompletion, row: StepRow | undefined, now: number): PersistenceError | null {
  const claim = row === undefined ? undefined : claimOf(row);
  const view: StepView = {
    found: row !== undefined,
    finished: row !== undefined && row.status !== Status.InProgress && row.status !== Status.Paused,
    paused: row?.status === Status.Paused,
    claim,
    now,
    positionTask: row !== undefined && fenceHolds(c, claim, now) ? positionTask(row, c.instanceId) : null,
  };
  return stepRefusal(c.instanceId, c, view, c.consumeEvent, row?.oldest ?? undefined);
}

/** What a step stores: the kit's header and index fields, and the next task's place. */
function planStep(
  q: Queries,
  c: ValidCompletion,
  next: NextStep,
  row: StepRow,
  clock: number,
  agingMs: number,
): { write: StepWrite; placed: Placement } {
  const nextTask = nextTaskOf(next);
  const hasResult = (taskId: string): boolean =>
    taskId === c.taskId
      ? row.has_task === 1
      : taskId === nextTask
        ? row.has_next === 1
        : q.get("hasResult", c.instanceId, taskId) !== undefined;
  const write = advanceHeader(
    {
      instanceId: c.instanceId,
      header: toBytes(row.header),
      lastCompletedTaskId: row.last_completed_task_id,
      hasResult,
    },
    c.taskId,
    next,
    Math.max(row.updated_at, clock),
  );
  const placed = placement(
    {
      readyTaskId: write.readyTaskId,
      awaiting: write.awaiting,
      eventPending: row.wait_pending === 1,
      runAt: write.schedule.runAt,
      priority: write.schedule.priority,
      retry: row.next_held === 1 ? null : (row.next_retry_at ?? undefined),
      updatedAt: write.updatedAt,
    },
    clock,
    agingMs,
  );
  return { write, placed };
}

/**
 * One completion with `next`. Returns its refusal having written nothing (its claim stays), or
 * null once the step is written. An undecodable header is this item's SerializationError, found
 * before any write.
 */
export function step(
  q: Queries,
  c: ValidCompletion,
  next: NextStep,
  clock: number,
  agingMs: number,
): CompletionOutcome {
  const id = c.instanceId;
  const event = c.consumeEvent;
  const row = q.getNamed<StepRow>("readStep", {
    id,
    task: c.taskId,
    next: nextTaskOf(next),
    consume: event?.eventName ?? null,
    consumed: event?.sequence ?? null,
    wait: next.kind === "AwaitingEvent" ? next.eventName : null,
  });
  let plan: { write: StepWrite; placed: Placement };
  try {
    const refusal = refusalOf(c, row, clock);
    if (refusal !== null || row === undefined) return refusal;
    plan = planStep(q, c, next, row, clock, agingMs);
  } catch (error) {
    if (isPersistenceError(error) && error.code !== ErrorCode.Backend) return error;
    throw error;
  }
  const { write, placed } = plan;
  if (write.keepsResults) {
    if (event !== undefined) {
      q.runNamed("consumeEvent", { id, name: event.eventName, sequence: event.sequence });
    }
    q.run("upsertResult", id, c.taskId, c.output);
  } else {
    // As a terminal saveSnapshot: no result and no pending event (the consumed one included) stay.
    q.run("deleteResults", id);
    q.run("deleteEvents", id);
  }
  q.runNamed("storeStep", {
    id,
    header: write.header,
    status: statusOf[write.status],
    last: write.lastCompletedTaskId,
    updatedAt: write.updatedAt,
    position: write.positionTaskId ?? write.awaiting?.nextTaskId ?? null,
    runAt: write.schedule.runAt,
    priority: write.schedule.priority,
    queue: write.schedule.queue,
    ...waitParams(write.awaiting),
    ...placementParams(placed),
    finishedAt: write.status === "Completed" || write.status === "Failed" ? clock : null,
  });
  q.run("releaseClaim", id, c.taskId);
  return null;
}
