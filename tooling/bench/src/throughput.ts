// Scenario 1 (task throughput of our backends) and scenario 2 (the same workload on the peers).
import type { PersistentBackend } from "@sayiir/persistence-core";
import { groupCpuMs, ownCpuMs, redisCommandTotal } from "./counters.ts";
import { describeSettings, type PeerName, type PeerSettings, peerVersion, setupPeer } from "./peers.ts";
import { runProcesses, type WorkerJob } from "./procs.ts";
import { outputFor, runSayiirLoop, type SayiirLoopResult } from "./sayiir-workers.ts";
import type { ServerInfo } from "./servers.ts";
import type { BackendTarget, Store } from "./targets.ts";
import { forEachConcurrent, round3 } from "./util.ts";
import { type PreloadResult, preload, readyId, readySnapshot, TASK_ID } from "./workload.ts";

export interface ThroughputOptions {
  tasks: number;
  workers: number;
  processes: number;
  batch: number;
  timeoutMs: number;
  preloadConcurrency: number;
}

export interface ThroughputResult {
  backend: string;
  chartLabel: string;
  tasks: number;
  workers: number;
  processes: number;
  batch: number;
  preload: PreloadResult;
  ms: number;
  tasksPerSecond: number;
  /** Every task completed exactly once (checked from the workers' reports and in the store). */
  exactlyOnce: boolean;
  problems: string[];
  claimCalls: number;
  emptyClaims: number;
  tasksPerClaim: number;
  /** Mean latency of each call under load, ms. */
  meanClaimMs: number;
  meanSaveMs: number;
  meanReleaseMs: number;
  errors: Record<string, number>;
  /** An extra row (option variant or bench experiment): its failures do not fail the run. */
  extra?: boolean;
  /** Statements / requests / commands sent to the server per task while timed (null: not counted). */
  roundTripsPerTask: number | null;
  /** Redis only: commands the server executed per task, those inside Lua scripts included. */
  serverCommandsPerTask: number | null;
  /** CPU ms per task of the worker processes, and of the server's processes (local servers only). */
  workerCpuMsPerTask: number | null;
  serverCpuMsPerTask: number | null;
  note?: string;
}

function splitWorkers(workers: number, processes: number): number[] {
  return Array.from(
    { length: processes },
    (_, p) => Math.floor(workers / processes) + (p < workers % processes ? 1 : 0),
  ).filter((w) => w > 0);
}

/** What the workers of one throughput run did. */
interface LoopRun {
  results: SayiirLoopResult[];
  startedAt: number;
  endedAt: number;
  /** Requests the workers sent while timed (undefined: not counted). */
  roundTrips?: number;
  workerCpuMs: number;
}

const TTL_MS = 300_000;

/** Scenario 1's workers: spread over worker processes, or all in this process (`processes` 1). */
async function runLoops(
  target: BackendTarget,
  store: Store,
  loader: PersistentBackend,
  o: ThroughputOptions,
  processes: number,
  countFrom: () => Promise<void>,
): Promise<LoopRun> {
  if (processes > 1) {
    const jobs: WorkerJob[] = splitWorkers(o.workers, processes).map((w, p) => ({
      kind: "sayiir",
      store: store.config,
      loop: {
        workers: w,
        batch: o.batch,
        ttlMs: TTL_MS,
        workerPrefix: `p${p}`,
        ...(target.completeMode ? { complete: target.completeMode } : {}),
      },
      poolSize: w + 2,
    }));
    const run = await runProcesses(jobs, o.timeoutMs, undefined, countFrom);
    return {
      results: run.outcomes.flatMap((x) => (x.kind === "sayiir" ? [x.result] : [])),
      startedAt: run.startedAt,
      endedAt: run.endedAt,
      ...(run.outcomes.every((x) => x.roundTrips !== undefined)
        ? { roundTrips: run.outcomes.reduce((a, x) => a + (x.roundTrips ?? 0), 0) }
        : {}),
      workerCpuMs: run.outcomes.reduce((a, x) => a + x.cpuMs, 0),
    };
  }
  await countFrom();
  const cpu0 = ownCpuMs();
  const r = await runSayiirLoop(loader, {
    workers: o.workers,
    batch: o.batch,
    ttlMs: TTL_MS,
    workerPrefix: "p0",
  });
  return { results: [r], startedAt: r.startedAt, endedAt: r.endedAt, workerCpuMs: ownCpuMs() - cpu0 };
}

export async function runThroughput(target: BackendTarget, o: ThroughputOptions): Promise<ThroughputResult> {
  const store = await target.createStore("tp");
  let loader: PersistentBackend | undefined;
  try {
    loader = await store.open(32);
    const prefix = "task";
    const pre = await preload(
      loader,
      o.tasks,
      (i) => readySnapshot(readyId(prefix, i), i),
      o.preloadConcurrency,
    );
    // A store that lives in this process (not durable: memory) cannot be shared with worker processes.
    const processes = loader.capabilities.durable ? Math.max(1, o.processes) : 1;
    const redisUrl = store.config.backend === "redis" ? (store.config.url ?? undefined) : undefined;
    let before = 0;
    const pgid = target.serverInfo?.control?.pgid;
    let serverCpu0: number | undefined;
    const countFrom = async () => {
      if (redisUrl) before = await redisCommandTotal(redisUrl);
      serverCpu0 = groupCpuMs(pgid);
    };
    const run = await runLoops(target, store, loader, o, processes, countFrom);
    // The two INFO calls (and their connections' handshakes) are noise next to thousands of tasks.
    const serverCpu1 = groupCpuMs(pgid);
    const serverCommands = redisUrl ? (await redisCommandTotal(redisUrl)) - before : undefined;
    const problems = await verifyExactlyOnce(loader, prefix, o.tasks, run.results);
    const serverCpuMs =
      serverCpu0 === undefined || serverCpu1 === undefined ? undefined : serverCpu1 - serverCpu0;
    return throughputRow(target, o, { processes, pre, run, problems, serverCommands, serverCpuMs });
  } finally {
    await loader?.close().catch(() => undefined);
    await store.drop().catch((e: unknown) => process.stderr.write(`[bench] drop failed: ${String(e)}\n`));
  }
}

/** The report's row of one throughput run. */
function throughputRow(
  target: BackendTarget,
  o: ThroughputOptions,
  m: {
    processes: number;
    pre: PreloadResult;
    run: LoopRun;
    problems: string[];
    serverCommands: number | undefined;
    serverCpuMs: number | undefined;
  },
): ThroughputResult {
  const { results, roundTrips, workerCpuMs } = m.run;
  const ms = m.run.endedAt - m.run.startedAt;
  const sum = (f: (r: SayiirLoopResult) => number) => results.reduce((a, r) => a + f(r), 0);
  const mean = (k: "claim" | "save" | "release") => {
    const count = sum((r) => r.ops[k].count);
    return count === 0 ? Number.NaN : round3(sum((r) => r.ops[k].totalMs) / count);
  };
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  const claimCalls = sum((r) => r.claimCalls);
  const perTask = (x: number | undefined) => (x === undefined ? null : round3(x / o.tasks));
  return {
    backend: target.label,
    chartLabel: target.chartLabel ?? target.label,
    tasks: o.tasks,
    workers: o.workers,
    processes: m.processes,
    batch: o.batch,
    preload: m.pre,
    ms: Math.round(ms),
    tasksPerSecond: Math.round((o.tasks / ms) * 1000),
    exactlyOnce: m.problems.length === 0,
    problems: m.problems,
    claimCalls,
    emptyClaims: sum((r) => r.emptyClaims),
    tasksPerClaim: round3(sum((r) => r.claimed) / Math.max(1, claimCalls)),
    meanClaimMs: mean("claim"),
    meanSaveMs: mean("save"),
    meanReleaseMs: mean("release"),
    errors,
    roundTripsPerTask: perTask(roundTrips),
    serverCommandsPerTask: perTask(m.serverCommands),
    workerCpuMsPerTask: perTask(workerCpuMs),
    serverCpuMsPerTask: perTask(m.serverCpuMs),
    ...(m.processes < o.processes ? { note: "in-process backend: all workers in one process" } : {}),
  };
}

/**
 * Exactly once: every pre-loaded task appears in exactly one worker's successful fenced commit, the
 * stored output is the one that commit wrote, and no ready task is left.
 */
async function verifyExactlyOnce(
  backend: PersistentBackend,
  prefix: string,
  n: number,
  results: SayiirLoopResult[],
): Promise<string[]> {
  const problems: string[] = [];
  const byInstance = new Map<string, { workerId: string; token: number; count: number }>();
  for (const r of results) {
    for (const [instanceId, taskId, workerId, token] of r.completed) {
      if (taskId !== TASK_ID) problems.push(`unexpected task ${taskId} of ${instanceId}`);
      const seen = byInstance.get(instanceId);
      if (seen) seen.count++;
      else byInstance.set(instanceId, { workerId, token, count: 1 });
    }
  }
  let duplicates = 0;
  let missing = 0;
  let wrongOutput = 0;
  let notStored = 0;
  const decoder = new TextDecoder();
  await forEachConcurrent(n, 32, async (i) => {
    const id = readyId(prefix, i);
    const entry = byInstance.get(id);
    if (!entry) {
      missing++;
      return;
    }
    if (entry.count > 1) duplicates++;
    const snapshot = await backend.loadSnapshot(id);
    const state = snapshot.state;
    const output = state.kind === "InProgress" ? state.completedTasks[TASK_ID]?.output : undefined;
    if (!output) notStored++;
    else if (decoder.decode(output) !== decoder.decode(outputFor(entry.workerId, entry.token))) wrongOutput++;
  });
  const extra = [...byInstance.keys()].filter((id) => !id.startsWith(`${prefix}-`)).length;
  if (duplicates) problems.push(`${duplicates} tasks committed more than once`);
  if (missing) problems.push(`${missing} tasks never committed`);
  if (notStored) problems.push(`${notStored} committed results not in the store`);
  if (wrongOutput) problems.push(`${wrongOutput} stored results differ from the commit that won`);
  if (extra) problems.push(`${extra} unknown instances committed`);
  const left = await backend.findAvailableTasks("verifier", 10);
  if (left.length > 0) problems.push(`${left.length}+ tasks still ready after the run`);
  return problems;
}

export interface PeerResult {
  peer: PeerName;
  version: string;
  /** Which of our backends runs on the same server. */
  server: string;
  settings: string;
  jobs: number;
  workers: number;
  processes: number;
  preloadMs: number;
  ms: number;
  jobsPerSecond: number;
  /** Jobs the handlers ran more than once, and jobs never run (a peer's at-least-once is not our check). */
  duplicates: number;
  missing: number;
  roundTripsPerJob: number | null;
  serverCommandsPerJob: number | null;
  workerCpuMsPerJob: number;
  serverCpuMsPerJob: number | null;
}

export async function runPeer(peer: PeerName, server: ServerInfo, o: ThroughputOptions): Promise<PeerResult> {
  const t0 = performance.now();
  const store = await setupPeer(peer, server, o.tasks);
  const preloadMs = Math.round(performance.now() - t0);
  try {
    const perProcess = splitWorkers(o.workers, Math.max(1, o.processes));
    const jobs: WorkerJob[] = perProcess.map((w) => ({
      kind: "peer",
      config: store.config,
      settings: { concurrency: w, batch: o.batch } satisfies PeerSettings,
    }));
    let before = 0;
    let ownBefore = 0;
    const pgid = server.control?.pgid;
    let serverCpu0: number | undefined;
    const run = await runProcesses(
      jobs,
      o.timeoutMs,
      () => store.remaining(),
      async () => {
        if (peer === "bullmq") before = await redisCommandTotal(server.url);
        ownBefore = store.ownCommands?.() ?? 0;
        serverCpu0 = groupCpuMs(pgid);
      },
    );
    const serverCpu1 = groupCpuMs(pgid);
    const workerCpuMs = run.outcomes.reduce((a, x) => a + x.cpuMs, 0);
    let roundTrips: number | undefined;
    let serverCommands: number | undefined;
    if (peer === "bullmq") {
      serverCommands =
        (await redisCommandTotal(server.url)) - before - ((store.ownCommands?.() ?? 0) - ownBefore);
    }
    if (run.outcomes.every((x) => x.roundTrips !== undefined)) {
      roundTrips = run.outcomes.reduce((a, x) => a + (x.roundTrips ?? 0), 0);
    }
    const counts = new Uint32Array(o.tasks);
    for (const x of run.outcomes) if (x.kind === "peer") for (const i of x.seen) counts[i]!++;
    let duplicates = 0;
    let missing = 0;
    for (const c of counts) {
      if (c === 0) missing++;
      else if (c > 1) duplicates++;
    }
    const ms = run.endedAt - run.startedAt;
    return {
      peer,
      version: peerVersion(peer),
      server: `${server.server} ${server.version}`,
      settings: describeSettings(
        peer,
        { concurrency: perProcess[0] ?? o.workers, batch: o.batch },
        perProcess.length,
      ),
      jobs: o.tasks,
      workers: o.workers,
      processes: perProcess.length,
      preloadMs,
      ms: Math.round(ms),
      jobsPerSecond: Math.round((o.tasks / ms) * 1000),
      duplicates,
      missing,
      roundTripsPerJob: roundTrips === undefined ? null : round3(roundTrips / o.tasks),
      serverCommandsPerJob: serverCommands === undefined ? null : round3(serverCommands / o.tasks),
      workerCpuMsPerJob: round3(workerCpuMs / o.tasks),
      serverCpuMsPerJob:
        serverCpu0 === undefined || serverCpu1 === undefined
          ? null
          : round3((serverCpu1 - serverCpu0) / o.tasks),
    };
  } finally {
    await store
      .drop()
      .catch((e: unknown) => process.stderr.write(`[bench] ${peer} drop failed: ${String(e)}\n`));
  }
}
