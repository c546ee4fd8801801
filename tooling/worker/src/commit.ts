// The fenced commit: load the task's snapshot (checking the workflow is still at this task and the
// claimed input is the snapshot's), then one saveSnapshot fenced by the claim that records the
// result and advances the workflow together.
import { bytesEqual, ClaimLostError, nextTaskInput, type WorkflowSnapshot } from "@sayiir/persistence-core";
import { parseChildId, type TaskAction } from "./definition.ts";
import { InputMismatch, preview, type TaskRun } from "./task-run.ts";

/** Loads the task's snapshot; a workflow that moved on means the claim is lost. */
export async function loadForCommit(run: TaskRun): Promise<WorkflowSnapshot> {
  const { worker, task } = run;
  run.checkpoint();
  const snapshot = await worker.backend.loadSnapshot(task.instanceId);
  const position = snapshot.state.kind === "InProgress" ? snapshot.state.position : undefined;
  if (position?.kind !== "AtTask" || position.taskId !== task.taskId) {
    // Another worker took the task over and moved the workflow on: our claim is gone.
    run.lost("load");
    run.checkpoint();
  }
  // The contract: a claimed task's input is the last completed task's output, else the
  // initial input. A backend that hands out another input has a bug; refuse to build on it.
  const expectedInput = nextTaskInput(snapshot);
  if (!bytesEqual(expectedInput, task.input)) {
    worker.emit({
      type: "input-mismatch",
      workerId: worker.workerId,
      instanceId: task.instanceId,
      taskId: task.taskId,
      token: task.claim.token,
      got: preview(task.input),
      expected: preview(expectedInput),
    });
    throw new InputMismatch();
  }
  return snapshot;
}

/** Writes `snapshot` fenced by the task's claim; a refused fence marks the claim lost. */
export async function commit(run: TaskRun, action: TaskAction, snapshot: WorkflowSnapshot): Promise<void> {
  const { worker, task } = run;
  run.checkpoint();
  try {
    await worker.backend.saveSnapshot(snapshot, { claim: task.claim });
  } catch (error) {
    if (error instanceof ClaimLostError) run.lost("commit");
    throw error;
  }
  worker.stats.committed++;
  const finished = snapshot.state.kind === "Completed";
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
  });
}
