// Scenario 6: workflow steps. N 4-step pipelines are started (startWorkflow, through the adapter),
// then run to completion by the reference worker (runWorker of @sayiir/worker: one completeTasks
// item with `next` per step) in W workers over P processes, like scenario 1. The clock starts when
// every process has connected and warmed its pool; it stops at the last workflow-completing commit.
// The parent polls the instances in order (one loadSnapshot of the first unfinished one every
// 10 ms) to know when to stop the workers.
import type { StoreConfig } from "@sayiir/backends";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { evaluate, startWorkflow } from "@sayiir/worker";
import { groupCpuMs, ownCpuMs } from "./counters.ts";
import { runProcesses, type WorkerJob } from "./procs.ts";
import {
  runStepsLoop,
  STEP_COUNT,
  STEP_IDS,
  type StepsLoopResult,
  stepsId,
  stepsInput,
  stepsWorkflow,
} from "./steps-workers.ts";
import type { BackendTarget } from "./targets.ts";
import { forEachConcurrent, round3, sleep } from "./util.ts";
import type { PreloadResult } from "./workload.ts";

export interface StepsOptions {
  workflows: number;
  workers: number;
  processes: number;
  batch: number;
  timeoutMs: number;
  preloadConcurrency: number;
}

export interface StepsResult {
  backend: string;
  workflows: number;
  tasks: number;
  workers: number;
  processes: number;
  batch: number;
  preload: PreloadResult;
  ms: number;
  stepsPerSecond: number;
  workflowsPerSecond: number;
  /** Every workflow Completed with the expected output, every task run and committed exactly once. */
  exactlyOnce: boolean;
  problems: string[];
  /** Tasks whose function ran more than once. */
  duplicates: number;
  /** Worker events off the happy path (lost claims, errors, ...), summed over the workers. */
  events: Record<string, number>;
  roundTripsPerTask: number | null;
  workerCpuMsPerTask: number | null;
  serverCpuMsPerTask: number | null;
  /** Scenario 1 (completeTasks) on the same backend in the same run, tasks/s, and steps/s over it. */
  completeTasksPerSecond?: number;
  ratio?: number;
  /** Which comparison the row is for ("vs scenario 1", "vs sayiir 1.0.0 at 4 workers"). */
  role: "main" | "peer-comparison";
  note?: string;
}

const LEASE_MS = 300_000;

function splitWorkers(workers: number, processes: number): number[] {
  return Array.from(
    { length: processes },
    (_, p) => Math.floor(workers / processes) + (p < workers % processes ? 1 : 0),
  ).filter((w) => w > 0);
}

/** Polls the workflows in order and resolves how many are not finished (0: all done). */
function remainingOf(backend: PersistentBackend, prefix: string, n: number): () => Promise<number> {
  let next = 0;
  return async () => {
    while (next < n) {
      const s = await backend.loadSnapshot(stepsId(prefix, next));
      if (s.state.kind === "InProgress" || s.state.kind === "Paused") return n - next;
      next++;
    }
    return 0;
  };
}

interface StepsRun {
  results: StepsLoopResult[];
  startedAt: number;
  endedAt: number;
  roundTrips?: number;
  workerCpuMs: number;
}

async function runWorkers(
  config: StoreConfig,
  loader: PersistentBackend,
  o: StepsOptions,
  processes: number,
  remaining: () => Promise<number>,
  countFrom: () => Promise<void>,
): Promise<StepsRun> {
  if (processes > 1) {
    const jobs: WorkerJob[] = splitWorkers(o.workers, processes).map((w, p) => ({
      kind: "steps",
      store: config,
      loop: { workers: w, batch: o.batch, leaseMs: LEASE_MS, workerPrefix: `p${p}` },
      poolSize: w + 2,
    }));
    const run = await runProcesses(jobs, o.timeoutMs, remaining, countFrom);
    const results = run.outcomes.flatMap((x) => (x.kind === "steps" ? [x.result] : []));
    return {
      results,
      startedAt: run.startedAt,
      endedAt: Math.max(...results.map((r) => r.lastCompletionAt)) || run.endedAt,
      ...(run.outcomes.every((x) => x.roundTrips !== undefined)
        ? { roundTrips: run.outcomes.reduce((a, x) => a + (x.roundTrips ?? 0), 0) }
        : {}),
      workerCpuMs: run.outcomes.reduce((a, x) => a + x.cpuMs, 0),
    };
  }
  await countFrom();
  const cpu0 = ownCpuMs();
  const stop = new AbortController();
  const loop = runStepsLoop(
    loader,
    { workers: o.workers, batch: o.batch, leaseMs: LEASE_MS, workerPrefix: "p0" },
    stop.signal,
  );
  const deadline = Date.now() + o.timeoutMs;
  while ((await remaining()) > 0) {
    if (Date.now() > deadline) {
      stop.abort();
      throw new Error(`workflows not finished within ${o.timeoutMs} ms`);
    }
    await sleep(10);
  }
  stop.abort();
  const r = await loop;
  return {
    results: [r],
    startedAt: r.startedAt,
    endedAt: r.lastCompletionAt,
    workerCpuMs: ownCpuMs() - cpu0,
  };
}

export async function runSteps(
  target: BackendTarget,
  o: StepsOptions,
  role: StepsResult["role"] = "main",
): Promise<StepsResult> {
  const store = await target.createStore("st");
  let loader: PersistentBackend | undefined;
  try {
    loader = await store.open(32);
    const backend = loader;
    const prefix = "wf";
    const definition = stepsWorkflow();
    const t0 = performance.now();
    await forEachConcurrent(o.workflows, o.preloadConcurrency, (i) =>
      startWorkflow(backend, definition, stepsId(prefix, i), stepsInput(i)),
    );
    const preloadMs = performance.now() - t0;
    const preload: PreloadResult = {
      count: o.workflows,
      ms: Math.round(preloadMs),
      perSecond: Math.round((o.workflows / preloadMs) * 1000),
    };
    const processes = loader.capabilities.durable ? Math.max(1, o.processes) : 1;
    const pgid = target.serverInfo?.control?.pgid;
    let serverCpu0: number | undefined;
    const countFrom = async () => {
      serverCpu0 = groupCpuMs(pgid);
    };
    const remaining = remainingOf(backend, prefix, o.workflows);
    const run = await runWorkers(store.config, backend, o, processes, remaining, countFrom);
    const serverCpu1 = groupCpuMs(pgid);
    const { problems, duplicates } = await verifySteps(backend, prefix, o.workflows, run.results);
    const tasks = o.workflows * STEP_COUNT;
    const ms = run.endedAt - run.startedAt;
    const events: Record<string, number> = {};
    for (const r of run.results)
      for (const [k, v] of Object.entries(r.events)) events[k] = (events[k] ?? 0) + v;
    const perTask = (x: number | undefined) => (x === undefined ? null : round3(x / tasks));
    return {
      backend: target.name,
      workflows: o.workflows,
      tasks,
      workers: o.workers,
      processes,
      batch: o.batch,
      preload,
      ms: Math.round(ms),
      stepsPerSecond: Math.round((tasks / ms) * 1000),
      workflowsPerSecond: Math.round((o.workflows / ms) * 1000),
      exactlyOnce: problems.length === 0,
      problems,
      duplicates,
      events,
      roundTripsPerTask: perTask(run.roundTrips),
      workerCpuMsPerTask: perTask(run.workerCpuMs),
      serverCpuMsPerTask: perTask(
        serverCpu0 === undefined || serverCpu1 === undefined ? undefined : serverCpu1 - serverCpu0,
      ),
      role,
      ...(processes < o.processes ? { note: "in-process backend: all workers in one process" } : {}),
    };
  } finally {
    await loader?.close().catch(() => undefined);
    await store.drop().catch((e: unknown) => process.stderr.write(`[bench] drop failed: ${String(e)}\n`));
  }
}

/**
 * Exactly once: every workflow Completed with the output `evaluate` gives, every task's function run
 * exactly once and its step committed exactly once, and nothing left ready.
 */
async function verifySteps(
  backend: PersistentBackend,
  prefix: string,
  n: number,
  results: StepsLoopResult[],
): Promise<{ problems: string[]; duplicates: number }> {
  const problems: string[] = [];
  const runs = new Map<string, number>();
  for (const r of results) for (const [k, c] of r.executions) runs.set(k, (runs.get(k) ?? 0) + c);
  const duplicateCommits = results.reduce((a, r) => a + r.duplicateCommits.length, 0);
  let duplicates = 0;
  let neverRun = 0;
  for (let i = 0; i < n; i++) {
    for (const t of STEP_IDS) {
      const c = runs.get(`${stepsId(prefix, i)}/${t}`) ?? 0;
      if (c === 0) neverRun++;
      else if (c > 1) duplicates++;
    }
  }
  const unknown = runs.size - (n * STEP_COUNT - neverRun);
  const definition = stepsWorkflow();
  let notCompleted = 0;
  let wrongOutput = 0;
  const decoder = new TextDecoder();
  await forEachConcurrent(n, 32, async (i) => {
    const s = await backend.loadSnapshot(stepsId(prefix, i));
    if (s.state.kind !== "Completed") {
      notCompleted++;
      return;
    }
    const expected = await evaluate(definition, stepsInput(i));
    if (decoder.decode(s.state.finalOutput) !== decoder.decode(expected)) wrongOutput++;
  });
  if (duplicates) problems.push(`${duplicates} tasks executed more than once`);
  if (duplicateCommits) problems.push(`${duplicateCommits} steps committed more than once`);
  if (neverRun) problems.push(`${neverRun} tasks never executed`);
  if (unknown > 0) problems.push(`${unknown} unknown tasks executed`);
  if (notCompleted) problems.push(`${notCompleted} workflows not Completed`);
  if (wrongOutput) problems.push(`${wrongOutput} workflows with a wrong final output`);
  const left = await backend.findAvailableTasks("verifier", 10);
  if (left.length > 0) problems.push(`${left.length}+ tasks still ready after the run`);
  return { problems, duplicates };
}
