// One claimed task from start to end: heartbeat while it runs, its action and fenced commit, what
// a failure means (lost claim, paused workflow, wrong input, failing task function, backend
// error), and the release.
import { type ClaimedTask, ClaimLostError, NotFoundError } from "@sayiir/persistence-core";
import { runAction } from "./actions.ts";
import { errorText, type WorkerContext } from "./context.ts";
import { type RetryPolicy, retryAt, type TaskAction, type WorkflowDefinition } from "./definition.ts";
import { failWorkflow } from "./fan-out.ts";
import { startHeartbeat } from "./heartbeat.ts";
import { InputMismatch, TaskAborted, TaskFunctionError, TaskRun } from "./task-run.ts";

/**
 * Runs one claimed task. Releases its claim afterwards unless the claim was lost, the worker
 * crashed, or a backend error left it to expire (so that another attempt happens later). A task
 * stopped because its workflow is paused is released: it runs again once the workflow is resumed.
 */
export async function runTask(worker: WorkerContext, task: ClaimedTask): Promise<void> {
  const run = new TaskRun(worker, task);
  const stopHeartbeat = startHeartbeat(run);
  let release = true;
  try {
    release = await execute(run);
  } finally {
    stopHeartbeat();
    run.dispose();
    if (release && !worker.crashed()) await releaseClaim(run);
  }
}

/** The action of the task; resolves whether to release the claim. */
async function execute(run: TaskRun): Promise<boolean> {
  const { worker, task } = run;
  const workflow = worker.compiled.get(task.workflowDefinitionHash);
  const action = workflow?.actions.get(task.taskId);
  if (workflow === undefined || action === undefined) {
    worker.emit({
      type: "error",
      workerId: worker.workerId,
      instanceId: task.instanceId,
      taskId: task.taskId,
      error: `no definition for ${task.workflowDefinitionHash} / ${task.taskId}`,
    });
    return true;
  }
  try {
    // A step's commit released the claim itself (completeTasks): nothing left to release.
    return (await runAction(run, workflow.definition, action)) !== "released";
  } catch (error) {
    return handleFailure(run, workflow.definition, action, error);
  }
}

/** What a failed action means; resolves whether to release the claim. */
async function handleFailure(
  run: TaskRun,
  definition: WorkflowDefinition,
  action: TaskAction,
  error: unknown,
): Promise<boolean> {
  const { worker, task } = run;
  const { workerId } = worker;
  const { instanceId, taskId } = task;
  if (run.pausedDuring !== undefined && !worker.crashed()) {
    // Stopped because the workflow is paused: nothing written; release, to run again after resume.
    worker.stats.paused++;
    worker.emit({
      type: "paused",
      workerId,
      instanceId,
      taskId,
      token: task.claim.token,
      during: run.pausedDuring,
    });
    return true;
  }
  if (error instanceof TaskAborted || run.signal.aborted) {
    if (!worker.crashed() && run.lostDuring !== undefined) {
      worker.stats.lost++;
      worker.emit({
        type: "lost",
        workerId,
        instanceId,
        taskId,
        token: task.claim.token,
        during: run.lostDuring,
      });
    }
    return false;
  }
  if (error instanceof ClaimLostError) return false;
  if (error instanceof InputMismatch) {
    worker.stats.errors++;
    return true; // released: the task is retried, hopefully with its right input
  }
  const text = errorText(error);
  if (error instanceof TaskFunctionError) {
    const stage = definition.stages[action.stage];
    const retry = action.kind === "step" && stage?.kind === "step" ? stage.options?.retry : undefined;
    if (retry !== undefined && task.attempt < retry.attempts) return retryTask(run, retry, text);
    return failTask(run, definition, action, text);
  }
  // A backend problem: leave the claim to expire so that another attempt happens later.
  worker.emit({ type: "error", workerId, instanceId, taskId, error: text });
  return false;
}

/** The task function threw: fail its workflow (fenced); resolves whether to release the claim. */
async function failTask(
  run: TaskRun,
  definition: WorkflowDefinition,
  action: TaskAction,
  text: string,
): Promise<boolean> {
  const { worker, task } = run;
  const { workerId } = worker;
  const { instanceId, taskId } = task;
  try {
    await failWorkflow(run, definition, action, text);
  } catch (error) {
    // Lost meanwhile, or paused (a paused workflow cannot be failed): what that failure means.
    if (run.signal.aborted || error instanceof ClaimLostError)
      return handleFailure(run, definition, action, error);
    // A backend problem: the claim expires and the task runs (and fails) again.
    worker.emit({
      type: "error",
      workerId,
      instanceId,
      taskId,
      error: `failing the workflow: ${errorText(error)}`,
    });
    return false;
  }
  worker.stats.failed++;
  worker.emit({ type: "failed", workerId, instanceId, taskId, error: text });
  return true;
}

/**
 * The task function threw and its step has attempts left: failTasks records the run and hands the
 * task back with a retry time (a durable backoff: the store holds it until then). failTasks
 * releases the claim, so there is nothing to release; resolves false.
 */
async function retryTask(run: TaskRun, policy: RetryPolicy, text: string): Promise<boolean> {
  const { worker, task } = run;
  const { workerId } = worker;
  const { instanceId, taskId } = task;
  const when = retryAt(policy, task.attempt, Date.now());
  let outcome: Error | null | undefined;
  try {
    run.checkpoint();
    [outcome] = await worker.backend.failTasks([{ claim: task.claim, error: text, retryAt: when }]);
  } catch (error) {
    if (run.signal.aborted) return false;
    // A backend problem: the claim expires and the task runs again (a takeover counts as an attempt).
    worker.emit({ type: "error", workerId, instanceId, taskId, error: `failTasks: ${errorText(error)}` });
    return false;
  }
  if (outcome instanceof ClaimLostError) {
    run.lost("commit");
    worker.stats.lost++;
    worker.emit({ type: "lost", workerId, instanceId, taskId, token: task.claim.token, during: "commit" });
    return false;
  }
  if (outcome !== null && outcome !== undefined) {
    worker.emit({ type: "error", workerId, instanceId, taskId, error: `failTasks: ${errorText(outcome)}` });
    return false;
  }
  worker.stats.retried++;
  worker.emit({
    type: "retrying",
    workerId,
    instanceId,
    taskId,
    token: task.claim.token,
    attempt: task.attempt,
    retryAt: when,
    error: text,
  });
  return false;
}

/** releaseTaskClaim; a claim that is already gone is fine, other failures are reported. */
async function releaseClaim(run: TaskRun): Promise<void> {
  const { worker, task } = run;
  const { instanceId, taskId } = task;
  try {
    await worker.backend.releaseTaskClaim(instanceId, taskId, worker.workerId);
    worker.emit({ type: "released", workerId: worker.workerId, instanceId, taskId, token: task.claim.token });
  } catch (error) {
    if (!(error instanceof ClaimLostError || error instanceof NotFoundError)) {
      worker.emit({
        type: "error",
        workerId: worker.workerId,
        instanceId,
        taskId,
        error: `release: ${errorText(error)}`,
      });
    }
  }
}
