// The fenced commits. A step's: one completeTasks with `next` that records the output, moves the
// workflow on, consumes the event the task ran on and releases the claim, without reading or
// rewriting the other outputs. The fan-out's system tasks: load the task's snapshot (checking the
// workflow is still at this task and the claimed input is the snapshot's), then one saveSnapshot
// fenced by the claim that records the result and advances the workflow together.
import {
  bytesEqual,
  ClaimLostError,
  ConflictError,
  EMPTY_BYTES,
  ErrorCode,
  type ExecutionPosition,
  type NextStep,
  nextTaskInput,
  type TaskCompletion,
  type WorkflowSnapshot,
  type WriteOptions,
} from "@sayiir/persistence-core";
import { parseChildId, type TaskAction } from "./definition.ts";
import { InputMismatch, preview, type TaskRun } from "./task-run.ts";

/** The task a position runs: AtTask's task, or the task after an awaited event. */
function positionTask(position: ExecutionPosition): string | undefined {
  if (position.kind === "AtTask") return position.taskId;
  if (position.kind === "AwaitingEvent") return position.nextTaskId;
  return undefined;
}

/**
 * Loads the task's snapshot. A paused workflow stops the task (it may not move on); a finished or
 * cancelled one, or one that moved on, means the claim is lost.
 */
export async function loadForCommit(run: TaskRun): Promise<WorkflowSnapshot> {
  const { worker, task } = run;
  run.checkpoint();
  const snapshot = await worker.backend.loadSnapshot(task.instanceId);
  const state = snapshot.state;
  if (state.kind === "Paused" && positionTask(state.position) === task.taskId) {
    run.paused("load");
    run.checkpoint();
  }
  if (state.kind !== "InProgress" || positionTask(state.position) !== task.taskId) {
    // Another worker took the task over and moved the workflow on, or it was cancelled: our claim is gone.
    run.lost("load");
    run.checkpoint();
  }
  // The contract: a claimed task's input is the last completed task's output, else the initial
  // input; after a wait, the payload of the oldest pending event of its name, or empty bytes when
  // it timed out. A backend that hands out another input has a bug; refuse to build on it.
  const expectedInput = await expectedInputOf(run, snapshot);
  if (expectedInput === undefined || !bytesEqual(expectedInput, task.input)) {
    worker.emit({
      type: "input-mismatch",
      workerId: worker.workerId,
      instanceId: task.instanceId,
      taskId: task.taskId,
      token: task.claim.token,
      got: preview(task.input),
      expected:
        expectedInput === undefined
          ? `(event ${JSON.stringify(task.event)} is not the oldest pending)`
          : preview(expectedInput),
    });
    throw new InputMismatch();
  }
  return snapshot;
}

/** What the claimed task's input must be (undefined: its event is not the oldest pending one of its name). */
async function expectedInputOf(run: TaskRun, snapshot: WorkflowSnapshot): Promise<Uint8Array | undefined> {
  const { task } = run;
  const state = snapshot.state;
  const waiting = state.kind === "InProgress" && state.position.kind === "AwaitingEvent";
  if (!waiting) return nextTaskInput(snapshot);
  if (task.event === undefined) return task.timedOut === true ? EMPTY_BYTES : undefined;
  run.checkpoint();
  const pending = await run.worker.backend.loadPendingEvents(task.instanceId);
  const oldest = pending.find((e) => e.eventName === task.event?.eventName);
  return oldest?.sequence === task.event.sequence ? oldest.payload : undefined;
}

/**
 * Writes `snapshot` fenced by the task's claim (consuming the task's event, if it carries one).
 * A refused fence marks the claim lost; a write refused because the workflow was paused meanwhile
 * stops the task as paused.
 */
export async function commit(run: TaskRun, action: TaskAction, snapshot: WorkflowSnapshot): Promise<void> {
  const { worker, task } = run;
  run.checkpoint();
  const options: WriteOptions = { claim: task.claim };
  if (task.event !== undefined) options.consumeEvent = task.event;
  try {
    await worker.backend.saveSnapshot(snapshot, options);
  } catch (error) {
    if (error instanceof ClaimLostError) run.lost("commit");
    if (error instanceof ConflictError && (await pausedNow(run))) {
      run.paused("commit");
      run.checkpoint();
    }
    throw error;
  }
  const state = snapshot.state;
  committed(run, action, state.kind === "InProgress" ? state.position : state);
}

/**
 * The step's commit: one completeTasks item with `next` (and the event the task ran on), sent in
 * the worker's next batched call (committer.ts). The claim is released by it. ClaimLost marks the claim lost; a Conflict is a paused workflow (the task
 * stops, to run again after resume) or one that moved on without us (lost).
 */
export async function commitStep(
  run: TaskRun,
  action: TaskAction,
  output: Uint8Array,
  next: NextStep,
): Promise<void> {
  const { worker, task } = run;
  run.checkpoint();
  const item: TaskCompletion = { claim: task.claim, output, next };
  if (task.event !== undefined) item.consumeEvent = task.event;
  // Shared with the other steps this worker finishes meanwhile: one completeTasks call for all.
  const outcome = await worker.committer.commit(item);
  if (outcome !== null) {
    if (outcome.code === ErrorCode.Conflict && (await pausedNow(run))) run.paused("commit");
    else if (outcome.code === ErrorCode.ClaimLost || outcome.code === ErrorCode.Conflict) run.lost("commit");
    run.checkpoint();
    throw outcome;
  }
  committed(run, action, next);
}

/** Counts and reports a landed commit; `to` is where the workflow went. */
function committed(
  run: TaskRun,
  action: TaskAction,
  to: ExecutionPosition | { kind: "Completed" | "Failed" | "Paused" | "Cancelled" },
): void {
  const { worker, task } = run;
  worker.stats.committed++;
  const finished = to.kind === "Completed";
  const runAt = to.kind === "AtTask" ? to.runAt : undefined;
  worker.emit({
    type: "committed",
    workerId: worker.workerId,
    instanceId: task.instanceId,
    taskId: task.taskId,
    token: task.claim.token,
    action: action.kind,
    finished,
    workflowCompleted: finished && parseChildId(task.instanceId) === undefined,
    ms: Date.now() - run.started,
    ...(task.event !== undefined ? { event: task.event } : {}),
    ...(task.timedOut === true ? { timedOut: true } : {}),
    ...(runAt !== undefined ? { runAt } : {}),
  });
}

/** Is the task's workflow paused now? (Why a fenced write that holds its claim was refused.) */
async function pausedNow(run: TaskRun): Promise<boolean> {
  try {
    return (await run.worker.backend.loadSnapshot(run.task.instanceId)).state.kind === "Paused";
  } catch {
    return false;
  }
}
