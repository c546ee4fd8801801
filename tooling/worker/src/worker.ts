// The reference worker loop: claim ready tasks with a lease, heartbeat while running them, commit
// each result with one fenced write that also advances the workflow, release. This module is the
// claim loop; one task's life is in run-task.ts, the fenced commit in commit.ts, the heartbeat in
// heartbeat.ts, fan-out/join in fan-out.ts.
import type { ClaimedTask } from "@sayiir/persistence-core";
import { errorText, sleep, type WorkerContext, whenAborted, workerContext } from "./context.ts";
import type { WorkerOptions, WorkerStats } from "./events.ts";
import { runTask } from "./run-task.ts";

export type { LostDuring, PausedDuring, WorkerEvent, WorkerOptions, WorkerStats } from "./events.ts";

/** The first idle sleep (ms); it doubles up to maxIdleMs while nothing is ready. */
const FIRST_IDLE_MS = 5;

/**
 * Runs the claim loop until `signal` aborts (then drains the tasks in flight) or `crash` aborts
 * (then abandons them at once). Resolves with the counters.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerStats> {
  const worker = workerContext(options);
  // Resolve when the signals fire, so the idle wait is cut short.
  const crashed = whenAborted(options.crash);
  const stopped = whenAborted(options.signal);
  const inFlight = new Set<Promise<void>>();
  let idleMs = FIRST_IDLE_MS;
  while (!worker.stopping()) {
    const free = worker.batch - inFlight.size;
    let claimed: ClaimedTask[] = [];
    if (free > 0) {
      claimed = await claimBatch(worker, free);
      if (worker.crashed()) break;
    }
    for (const task of claimed) start(worker, task, inFlight);
    if (claimed.length > 0) {
      idleMs = FIRST_IDLE_MS;
      continue;
    }
    // Nothing new: wait for a task in flight to finish (its successor may be ready now), and when
    // slots are free, at most the idle backoff (5 ms doubling to maxIdleMs while nothing is ready).
    const waits: Promise<unknown>[] = [...inFlight, crashed, stopped];
    if (free > 0) {
      waits.push(sleep(idleMs));
      idleMs = Math.min(worker.maxIdleMs, idleMs * 2);
    }
    await Promise.race(waits);
  }
  if (!worker.crashed()) await Promise.all(inFlight);
  return worker.stats;
}

/** claimAvailableTasks for the free slots; a failure is reported and claims nothing. */
async function claimBatch(worker: WorkerContext, free: number): Promise<ClaimedTask[]> {
  try {
    const options = worker.queues === undefined ? undefined : { queues: worker.queues };
    return await worker.backend.claimAvailableTasks(worker.workerId, free, worker.leaseMs, options);
  } catch (error) {
    worker.emit({
      type: "error",
      workerId: worker.workerId,
      error: `claimAvailableTasks: ${errorText(error)}`,
    });
    return [];
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
