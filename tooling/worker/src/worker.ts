// The reference worker loop: claim ready tasks with a lease, heartbeat while running them, commit
// each result with one fenced write that also advances the workflow, release. This module is the
// claim loop; one task's life is in run-task.ts, the fenced commit in commit.ts, the heartbeat in
// heartbeat.ts, fan-out/join in fan-out.ts.
import type { ClaimedTask } from "@sayiir/persistence-core";
import { errorText, type WorkerContext, whenAborted, workerContext } from "./context.ts";
import type { WorkerOptions, WorkerStats } from "./events.ts";
import { backOff, FIRST_BACKOFF_MS, MAX_EMPTY_READY, waitIdle } from "./idle.ts";
import { runTask } from "./run-task.ts";

export type { LostDuring, PausedDuring, WorkerEvent, WorkerOptions, WorkerStats } from "./events.ts";

/**
 * Runs the claim loop until `signal` aborts (then drains the tasks in flight) or `crash` aborts
 * (then abandons them at once). Resolves with the counters.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerStats> {
  const worker = workerContext(options);
  // Resolves when either signal fires, so a wait or a backoff is cut short.
  const halt = Promise.race([whenAborted(options.crash), whenAborted(options.signal)]);
  const inFlight = new Set<Promise<void>>();
  let backoffMs = FIRST_BACKOFF_MS;
  // Waits in a row that said "ready" yet the claim found nothing (others were faster, or the
  // store's look and its claim disagree): past MAX_EMPTY_READY, back off rather than spin.
  let emptyReady = 0;
  while (!worker.stopping()) {
    const free = worker.batch - inFlight.size;
    let claimed: ClaimedTask[] | undefined = [];
    if (free > 0) {
      claimed = await claimBatch(worker, free);
      if (worker.crashed()) break;
    }
    if (claimed !== undefined) {
      for (const task of claimed) start(worker, task, inFlight);
      // Under load nothing changes: a worker that got tasks claims again at once.
      if (claimed.length > 0) {
        backoffMs = FIRST_BACKOFF_MS;
        emptyReady = 0;
        continue;
      }
      // Every slot busy: the next chance to claim is when a task in flight finishes.
      if (free === 0) {
        await Promise.race([...inFlight, halt]);
        continue;
      }
      // Slots free and nothing ready: wait on the store (or a task in flight finishing).
      if (emptyReady < MAX_EMPTY_READY) {
        const reason = await waitIdle(worker, inFlight, halt);
        if (reason !== undefined) {
          emptyReady = reason === "ready" ? emptyReady + 1 : 0;
          if (reason !== "ready") backoffMs = FIRST_BACKOFF_MS;
          continue;
        }
      } else emptyReady = 0;
    }
    // A claim or a wait failed (or waits keep saying "ready" for nothing): back off, 5 ms doubling
    // to maxIdleMs, before trying again.
    await backOff(backoffMs, inFlight, halt);
    backoffMs = Math.min(worker.maxIdleMs, backoffMs * 2);
  }
  if (!worker.crashed()) await Promise.all(inFlight);
  return worker.stats;
}

/** claimAvailableTasks for the free slots; a failure is reported and answers undefined. */
async function claimBatch(worker: WorkerContext, free: number): Promise<ClaimedTask[] | undefined> {
  try {
    const options = worker.queues === undefined ? undefined : { queues: worker.queues };
    return await worker.backend.claimAvailableTasks(worker.workerId, free, worker.leaseMs, options);
  } catch (error) {
    worker.emit({
      type: "error",
      workerId: worker.workerId,
      error: `claimAvailableTasks: ${errorText(error)}`,
    });
    return undefined;
  }
}

/** Counts and reports a claimed task and runs it in flight. */
function start(worker: WorkerContext, task: ClaimedTask, inFlight: Set<Promise<void>>): void {
  worker.stats.claimed++;
  worker.emit({
    type: "claimed",
    workerId: worker.workerId,
    instanceId: task.instanceId,
    taskId: task.taskId,
    token: task.claim.token,
    at: task.claim.claimedAt,
    attempt: task.attempt,
    priority: task.priority,
    queue: task.queue,
  });
  const run = runTask(worker, task).finally(() => inFlight.delete(run));
  inFlight.add(run);
}
