import type { EventRef, Fence } from "../claims.js";
import { failures, type PersistenceError } from "../errors.js";
import { applyStep, type NextStep, setCompletedTask, type WorkflowSnapshot } from "../snapshot.js";
import { decodeWithoutOutputs, type StoredHeaderView, type StoredState, storedState } from "./control.js";
import { consumeRefusal, resultRefusal, type WriteView } from "./refusals.js";

/** What completeTasks with `next` is checked against, read inside the adapter's atomic step. */
export interface StepView extends WriteView {
  /** The stored workflow is Paused. */
  paused: boolean;
  /** The task the stored InProgress position runs (AtTask's task, or a wait's next task), else null. */
  positionTask: string | null;
}

/**
 * Why a completion with `next` may not apply, in the contract's order: NotFound, ClaimLost (the
 * fence), Conflict when finished, then Conflict when paused, when the workflow is not at the
 * claimed task, or when `event` is not the oldest pending event of its name (`oldest`: that
 * one's sequence). null: the step may go ahead.
 */
export function stepRefusal(
  instanceId: string,
  fence: Fence,
  view: StepView,
  event: EventRef | undefined,
  oldest: number | undefined,
): PersistenceError | null {
  const refusal = resultRefusal(instanceId, fence, view);
  if (refusal !== null) return refusal;
  if (view.paused) return failures.pausedCannotMove(instanceId);
  if (view.positionTask !== fence.taskId) return failures.notAtTask(instanceId, fence.taskId);
  return consumeRefusal(instanceId, event, oldest);
}

/** What to store after one step, besides the task's result (which `keepsResults` says to write). */
export type StepWrite = StoredState & {
  /**
   * InProgress after the step: the task's result is written and the other results stay.
   * false (Completed or Failed): the instance keeps no results, as after a terminal saveSnapshot.
   */
  keepsResults: boolean;
};

/**
 * The header and index fields after `taskId` completed and the workflow moved to `next` at `now`
 * (the store's clock), computed from the stored header alone: outputs are never read. The caller
 * has checked the step with stepRefusal. `stored.hasResult` is asked about the next position's
 * task too (a task that already has a result is not ready, as after a saveSnapshot).
 */
export function advanceHeader(
  stored: StoredHeaderView,
  taskId: string,
  next: NextStep,
  now: number,
): StepWrite {
  const before = decodeWithoutOutputs(stored);
  const after: WorkflowSnapshot = applyStep(before, taskId, PLACEHOLDER, next, now);
  if (after.state.kind === "InProgress") {
    const nextTask =
      next.kind === "AtTask" ? next.taskId : next.kind === "AwaitingEvent" ? next.nextTaskId : undefined;
    if (nextTask !== undefined && nextTask !== taskId && stored.hasResult(nextTask)) {
      setCompletedTask(after.state.completedTasks, { taskId: nextTask, output: PLACEHOLDER });
    }
  }
  return { ...storedState(after, now), keepsResults: after.state.kind === "InProgress" };
}

const PLACEHOLDER = new Uint8Array(0);
