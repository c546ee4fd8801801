// Scenario 6's workload and workers: 4-step pipelines run by the reference worker (`runWorker` of
// @sayiir/worker), which commits each step with one completeTasks item carrying `next` (record the
// output, move the workflow on, make the next task ready, release the claim). Every task function
// counts its own runs per (instance, task): a run twice is a duplicate execution.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { defineWorkflow, runWorker, step, type WorkerEvent, type WorkflowDefinition } from "@sayiir/worker";
import { errorMessage, nowMs } from "./util.ts";

export const STEPS_HASH = "bench-steps-v1";
export const STEP_COUNT = 4;
export const STEP_IDS = Array.from({ length: STEP_COUNT }, (_, k) => `s${k + 1}`);

const encoder = new TextEncoder();

/** The instance id of workflow i and its input. */
export const stepsId = (prefix: string, i: number): string => `${prefix}-${i}`;
export const stepsInput = (i: number): Uint8Array => encoder.encode(`in-${i}`);

/**
 * The 4-step pipeline: each step appends `.k` to its input (a small output derived from it).
 * `onRun` is called for every run of a task function (not for `evaluate`'s runs).
 */
export function stepsWorkflow(onRun?: (instanceId: string, taskId: string) => void): WorkflowDefinition {
  return defineWorkflow(
    STEPS_HASH,
    STEP_IDS.map((id, k) =>
      step(id, (input, context) => {
        if (onRun && context.instanceId !== "(evaluate)") onRun(context.instanceId, context.taskId);
        const out = new Uint8Array(input.length + 2);
        out.set(input);
        out.set(encoder.encode(`.${k + 1}`), input.length);
        return out;
      }),
    ),
  );
}

export interface StepsLoopOptions {
  /** runWorker loops in this process. */
  workers: number;
  /** Tasks in flight per worker (claimed in batches of the free slots). */
  batch: number;
  leaseMs: number;
  /** Worker ids are `${workerPrefix}-${k}`. */
  workerPrefix: string;
}

export interface StepsLoopResult {
  /** Runs of the task functions per "instanceId/taskId". */
  executions: Array<[string, number]>;
  /** Landed commits per "instanceId/taskId" that landed more than once (should be none). */
  duplicateCommits: Array<[string, number]>;
  commits: number;
  claimed: number;
  workflowsCompleted: number;
  /** When this process's last workflow-completing commit landed (0: none). */
  lastCompletionAt: number;
  startedAt: number;
  /** Counted worker events that are not the happy path (lost, error, failed, input-mismatch, ...). */
  events: Record<string, number>;
}

/** Runs `options.workers` reference workers on `backend` until `signal` aborts, then drains them. */
export async function runStepsLoop(
  backend: PersistentBackend,
  options: StepsLoopOptions,
  signal: AbortSignal,
): Promise<StepsLoopResult> {
  const executions = new Map<string, number>();
  const commits = new Map<string, number>();
  const result: StepsLoopResult = {
    executions: [],
    duplicateCommits: [],
    commits: 0,
    claimed: 0,
    workflowsCompleted: 0,
    lastCompletionAt: 0,
    startedAt: nowMs(),
    events: {},
  };
  const workflow = stepsWorkflow((instanceId, taskId) => {
    const key = `${instanceId}/${taskId}`;
    executions.set(key, (executions.get(key) ?? 0) + 1);
  });
  const onEvent = (e: WorkerEvent) => {
    if (e.type === "claimed") {
      result.claimed++;
      return;
    }
    if (e.type === "committed") {
      const key = `${e.instanceId}/${e.taskId}`;
      commits.set(key, (commits.get(key) ?? 0) + 1);
      result.commits++;
      if (e.workflowCompleted) {
        result.workflowsCompleted++;
        result.lastCompletionAt = nowMs();
      }
      return;
    }
    const key = e.type === "error" ? `error: ${e.error.slice(0, 100)}` : e.type;
    result.events[key] = (result.events[key] ?? 0) + 1;
  };
  try {
    await Promise.all(
      Array.from({ length: options.workers }, (_, k) =>
        runWorker({
          backend,
          workerId: `${options.workerPrefix}-${k}`,
          workflows: [workflow],
          leaseMs: options.leaseMs,
          batch: options.batch,
          signal,
          onEvent,
        }),
      ),
    );
  } catch (error) {
    result.events[`threw: ${errorMessage(error).slice(0, 100)}`] = 1;
  }
  result.executions = [...executions];
  result.duplicateCommits = [...commits].filter(([, n]) => n > 1);
  return result;
}
