// The heartbeat of a claimed task: extendTaskClaim by the lease every heartbeatMs while it runs.
// A refused extend (ClaimLostError / NotFoundError: taken over, or the workflow was cancelled)
// aborts the task as lost; an extend that says the workflow is paused stops it early (it is then
// released, to run again after resume); other failures are reported and the next beat tries again.
import { ClaimLostError, NotFoundError } from "@sayiir/persistence-core";
import { errorText } from "./context.ts";
import type { TaskRun } from "./task-run.ts";

/** Starts the heartbeat of `run`; returns what stops it. */
export function startHeartbeat(run: TaskRun): () => void {
  const { worker, task } = run;
  if (worker.heartbeatMs <= 0) return () => {};
  const { instanceId, taskId } = task;
  const timer = setInterval(() => {
    if (run.signal.aborted || worker.crashed()) return;
    worker.backend
      .extendTaskClaim(instanceId, taskId, worker.workerId, worker.leaseMs)
      .then((renewed) => {
        if (renewed.workflowPaused && !run.signal.aborted) run.paused("heartbeat");
      })
      .catch((error: unknown) => {
        if (error instanceof ClaimLostError || error instanceof NotFoundError) run.lost("heartbeat");
        else
          worker.emit({
            type: "error",
            workerId: worker.workerId,
            instanceId,
            taskId,
            error: `heartbeat: ${errorText(error)}`,
          });
      });
  }, worker.heartbeatMs);
  return () => clearInterval(timer);
}
