// The worker loop of scenario 1: claimAvailableTasks in batches, then the claimed batch finished with
// one completeTasks call (fenced result + release per task), or, in the "per-task" variant, a fenced
// saveTaskResult and a releaseTaskClaim per task. Runs in worker processes (worker.ts) or, for the
// in-memory backend, in the main process.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { errorMessage, nowMs, sleep } from "./util.ts";

export interface SayiirLoopOptions {
  /** Concurrent workers in this process. */
  workers: number;
  /** claimAvailableTasks limit. */
  batch: number;
  ttlMs: number;
  /** Worker ids are `${workerPrefix}-${k}`. */
  workerPrefix: string;
  /**
   * How a claimed batch is finished: "batch" (default) one completeTasks call; "per-task" a fenced
   * saveTaskResult then a releaseTaskClaim per task.
   */
  complete?: CompleteMode;
}

export type CompleteMode = "batch" | "per-task";

export interface OpStats {
  count: number;
  totalMs: number;
}

export interface SayiirLoopResult {
  /** One entry per task whose fenced result landed: [instanceId, taskId, workerId, token]. */
  completed: Array<[string, string, string, number]>;
  claimCalls: number;
  emptyClaims: number;
  claimed: number;
  errors: Record<string, number>;
  ops: { claim: OpStats; save: OpStats; release: OpStats };
  startedAt: number;
  endedAt: number;
}

/** The output a worker writes: who wrote it under which fencing token, so the check can tell. */
export function outputFor(workerId: string, token: number): Uint8Array {
  return new TextEncoder().encode(`${workerId}#${token}`);
}

function errorKey(op: string, error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return `${op}:${typeof code === "string" ? code : errorMessage(error).slice(0, 80)}`;
}

export async function runSayiirLoop(
  backend: PersistentBackend,
  options: SayiirLoopOptions,
): Promise<SayiirLoopResult> {
  const result: SayiirLoopResult = {
    completed: [],
    claimCalls: 0,
    emptyClaims: 0,
    claimed: 0,
    errors: {},
    ops: {
      claim: { count: 0, totalMs: 0 },
      save: { count: 0, totalMs: 0 },
      release: { count: 0, totalMs: 0 },
    },
    startedAt: nowMs(),
    endedAt: 0,
  };
  const fail = (key: string) => {
    result.errors[key] = (result.errors[key] ?? 0) + 1;
  };
  const track = (stats: OpStats, t0: number) => {
    stats.count++;
    stats.totalMs += performance.now() - t0;
  };

  const worker = async (workerId: string): Promise<void> => {
    let empties = 0;
    let failures = 0;
    while (true) {
      let tasks: Awaited<ReturnType<PersistentBackend["claimAvailableTasks"]>>;
      const t0 = performance.now();
      try {
        result.claimCalls++;
        tasks = await backend.claimAvailableTasks(workerId, options.batch, options.ttlMs);
        track(result.ops.claim, t0);
        failures = 0;
      } catch (error) {
        fail(errorKey("claim", error));
        if (++failures > 50) throw error;
        await sleep(20);
        continue;
      }
      if (tasks.length === 0) {
        result.emptyClaims++;
        // The contract: [] only when no unclaimed ready task is left that another in-flight call
        // is not taking. One more look after a pause covers the tail of the run.
        if (++empties >= 2) return;
        await sleep(10);
        continue;
      }
      empties = 0;
      result.claimed += tasks.length;
      if ((options.complete ?? "batch") === "batch") {
        const t1 = performance.now();
        try {
          const outcomes = await backend.completeTasks(
            tasks.map(({ claim }) => ({ claim, output: outputFor(workerId, claim.token) })),
          );
          track(result.ops.save, t1);
          outcomes.forEach((outcome, i) => {
            const task = tasks[i];
            if (task === undefined) return;
            if (outcome === null)
              result.completed.push([task.instanceId, task.taskId, workerId, task.claim.token]);
            else fail(errorKey("complete", outcome));
          });
        } catch (error) {
          fail(errorKey("complete", error));
        }
        continue;
      }
      for (const task of tasks) {
        const { claim } = task;
        const t1 = performance.now();
        try {
          await backend.saveTaskResult(task.instanceId, task.taskId, outputFor(workerId, claim.token), {
            claim,
          });
          track(result.ops.save, t1);
          result.completed.push([task.instanceId, task.taskId, workerId, claim.token]);
        } catch (error) {
          fail(errorKey("save", error));
        }
        const t2 = performance.now();
        try {
          await backend.releaseTaskClaim(task.instanceId, task.taskId, workerId);
          track(result.ops.release, t2);
        } catch (error) {
          fail(errorKey("release", error));
        }
      }
    }
  };

  await Promise.all(
    Array.from({ length: options.workers }, (_, k) => worker(`${options.workerPrefix}-${k}`)),
  );
  result.endedAt = nowMs();
  return result;
}
