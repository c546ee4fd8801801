// `pnpm bench`: runs the scenarios on every available backend and the peers, prints the tables,
// writes results/latest.json and results/latest.svg. Exits non-zero when an exactly-once check fails
// or a scenario breaks; a missed performance target is only printed.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, freemem, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type BackendName, SERVER_KINDS } from "@sayiir/backends";
import { DISCOVERY_SHAPES, type DiscoveryResult, runDiscovery } from "./discovery.ts";
import { runOperations } from "./operations.ts";
import { type BenchOptions, parseOptions, USAGE } from "./options.ts";
import { PEER_BACKEND, type PeerName } from "./peers.ts";
import { pythonPeer, runPythonPeer } from "./python-peer.ts";
import { type BenchReport, evaluateTargets, printReport, renderSvg } from "./report.ts";
import { type ServerKindUsed, type Servers, startServers } from "./servers.ts";
import { runSnapshots } from "./snapshots.ts";
import { runSteps, type StepsResult } from "./steps.ts";
import { type Availability, type BackendTarget, resolveBackends } from "./targets.ts";
import { runPeer, runThroughput } from "./throughput.ts";
import { errorMessage } from "./util.ts";
import {
  runWakeups,
  runWakeupsPeer,
  WAKE_PEERS,
  type WakeupsOptions,
  type WakeupsResult,
} from "./wakeups.ts";

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function machine(): BenchReport["machine"] {
  let cpuModel = cpus()[0]?.model ?? "?";
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpuModel = /model name\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? cpuModel;
  } catch {
    // not Linux
  }
  let nproc = cpus().length;
  try {
    nproc = Number(execFileSync("nproc", { encoding: "utf8" }).trim()) || nproc;
  } catch {
    // no coreutils
  }
  let freeH = "";
  try {
    freeH = execFileSync("free", ["-h"], { encoding: "utf8" }).trimEnd();
  } catch {
    // not Linux
  }
  return {
    nproc,
    cpuModel,
    memTotalGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    memFreeGiB: Math.round((freemem() / 2 ** 30) * 10) / 10,
    freeH,
    loadAverage: loadAverage(),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
}

function loadAverage(): number[] {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number);
  } catch {
    return [];
  }
}

function serverKinds(o: BenchOptions): ServerKindUsed[] {
  const kinds = new Set<ServerKindUsed>();
  for (const b of o.backends) {
    const kind = SERVER_KINDS[b];
    if (kind !== null) kinds.add(kind);
  }
  if (o.scenarios.includes("peers")) for (const p of o.peers) kinds.add(PEER_BACKEND[p]);
  if (o.scenarios.includes("wakeups"))
    for (const p of o.peers) if (WAKE_PEERS.includes(p)) kinds.add(PEER_BACKEND[p]);
  return [...kinds];
}

/** Backends on a Java stand-in server (mongo-java-server, DynamoDB Local): smaller sizes. */
const STAND_INS: ReadonlySet<BackendName> = new Set(["mongo", "dynamodb"]);

/** Runs a scenario on one backend, logs its time; a failure is recorded (an extra row's is not fatal). */
type Guard = <T>(
  scenario: string,
  backend: string,
  fn: () => Promise<T>,
  fatal?: boolean,
) => Promise<T | undefined>;

function guardOf(report: BenchReport): Guard {
  return async (scenario, backend, fn, fatal = true) => {
    const s0 = performance.now();
    try {
      const value = await fn();
      log(`${scenario} ${backend}: done in ${((performance.now() - s0) / 1000).toFixed(1)} s`);
      return value;
    } catch (error) {
      log(`${scenario} ${backend}: FAILED: ${errorMessage(error)}`);
      report.errors.push({ scenario, backend, message: errorMessage(error), fatal });
      return undefined;
    }
  };
}

function newReport(o: BenchOptions, started: Date, servers: Servers): BenchReport {
  const report: BenchReport = {
    version: 1,
    startedAt: started.toISOString(),
    finishedAt: "",
    durationS: 0,
    quick: o.quick,
    options: { ...o, outDir: undefined },
    machine: machine(),
    servers: {},
    skipped: {},
    throughput: [],
    peers: [],
    steps: [],
    stepsPeers: [],
    discovery: [],
    snapshots: [],
    wakeups: [],
    operations: [],
    targets: [],
    errors: [],
  };
  for (const [kind, info] of Object.entries({
    redis: servers.redis,
    postgres: servers.postgres,
    mongodb: servers.mongodb,
    dynamodb: servers.dynamodb,
  })) {
    if (info) report.servers[kind] = { server: info.server, version: info.version, source: info.source };
  }
  for (const [kind, reason] of Object.entries(servers.unavailable)) {
    log(`${kind}: no server: ${reason}`);
  }
  return report;
}

/** The requested backends that can run (the others are recorded as skipped, with the reason). */
async function availableTargets(
  o: BenchOptions,
  servers: Servers,
  report: BenchReport,
): Promise<BackendTarget[]> {
  const targets = await resolveBackends(o.backends, servers);
  return [...targets.entries()].flatMap(([name, a]: [BackendName, Availability]) => {
    if (a.ok) {
      // Server backends are listed under their server kind already.
      if (SERVER_KINDS[name] === null) {
        report.servers[name] ??= { server: a.target.server, version: "", source: "in-process" };
      }
      return [a.target];
    }
    report.skipped[name] = a.reason;
    log(`SKIP ${name}: ${a.reason}`);
    return [];
  });
}

/** Scenario 1 on one backend and its variants (extra rows). */
async function throughputOf(o: BenchOptions, target: BackendTarget, report: BenchReport, guard: Guard) {
  const tasks = STAND_INS.has(target.name) ? Math.min(o.tasks, o.tasksStandIn) : o.tasks;
  for (const t of [target, ...(target.variants ?? [])]) {
    const run = () =>
      runThroughput(t, {
        tasks,
        workers: o.workers,
        processes: o.processes,
        batch: o.batch,
        timeoutMs: o.durationS * 1000,
        preloadConcurrency: o.preloadConcurrency,
      });
    const r = await guard("throughput", t.label, run, t === target);
    if (!r) continue;
    r.extra = t !== target;
    if (tasks < o.tasks) r.note = `${tasks} tasks instead of ${o.tasks} on ${t.server} (a Java stand-in)`;
    report.throughput.push(r);
    log(
      `  ${r.backend}: ${r.tasksPerSecond} tasks/s (${r.tasks} tasks in ${r.ms} ms, ${r.processes} processes)` +
        `${r.exactlyOnce ? ", exactly once: ok" : `, EXACTLY-ONCE FAILED: ${r.problems.join("; ")}`}`,
    );
  }
}

/** Scenario 2: the peers on the same servers. */
async function peersOf(o: BenchOptions, servers: Servers, report: BenchReport, guard: Guard) {
  for (const peer of o.peers as PeerName[]) {
    const info = PEER_BACKEND[peer] === "redis" ? servers.redis : servers.postgres;
    if (!info) {
      report.skipped[peer] = `no ${PEER_BACKEND[peer]} server`;
      log(`SKIP ${peer}: no ${PEER_BACKEND[peer]} server`);
      continue;
    }
    const r = await guard("peers", peer, () =>
      runPeer(peer, info, {
        tasks: o.tasks,
        workers: o.workers,
        processes: o.processes,
        batch: o.batch,
        timeoutMs: o.durationS * 1000,
        preloadConcurrency: o.preloadConcurrency,
      }),
    );
    if (r) {
      report.peers.push(r);
      log(`  ${peer}: ${r.jobsPerSecond} jobs/s (${r.jobs} jobs in ${r.ms} ms)`);
    }
  }
}

/** Scenario 3 (discovery as the store fills) on one backend. */
async function discoveryOf(o: BenchOptions, target: BackendTarget, report: BenchReport, guard: Guard) {
  const standIn = STAND_INS.has(target.name);
  const sizes =
    target.name === "dynamodb" ? o.storeSizesDynamo : standIn ? o.storeSizesStandIn : o.storeSizes;
  for (const shape of DISCOVERY_SHAPES) {
    const r: DiscoveryResult | undefined = await guard(`discovery (${shape})`, target.name, () =>
      runDiscovery(
        target,
        { shape, sizes, ready: o.ready, samples: o.samples, preloadConcurrency: o.preloadConcurrency },
        log,
      ),
    );
    if (!r) continue;
    if (standIn && sizes.at(-1)! < o.storeSizes.at(-1)!) {
      r.note = `${target.server}: ${sizes.at(-1)!.toLocaleString("en-US")} instead of ${o.storeSizes.at(-1)!.toLocaleString("en-US")} (a Java stand-in: loading through the adapter runs at ${r.points.at(-1)?.load.perSecond ?? "?"} snapshots/s here)`;
    }
    report.discovery.push(r);
  }
}

/** Scenario 4 (snapshot sizes) on one backend. */
async function snapshotsOf(o: BenchOptions, target: BackendTarget, report: BenchReport, guard: Guard) {
  const samples = o.samples;
  const r = await guard("snapshots", target.name, () =>
    runSnapshots(target, [
      { bytes: 1024, samples },
      { bytes: 64 * 1024, samples },
      { bytes: 1024 * 1024, samples: Math.max(5, Math.floor(samples / 4)) },
    ]),
  );
  if (r) report.snapshots.push(r);
}

/** Scenario 7 (operating a store: result reads, purges) on one backend. */
async function operationsOf(o: BenchOptions, target: BackendTarget, report: BenchReport, guard: Guard) {
  const standIn = STAND_INS.has(target.name);
  const r = await guard("operations", target.name, () =>
    runOperations(
      target,
      {
        bigOutputBytes: o.bigOutputBytes,
        purgeSizes: standIn ? o.purgeSizesStandIn : o.purgeSizes,
        samples: o.samples,
        purgeCalls: o.quick ? 5 : 20,
        preloadConcurrency: o.preloadConcurrency,
      },
      log,
    ),
  );
  if (r) report.operations?.push(r);
}

/** Scenario 5 (wake-up latency and idle cost) on one backend. */
async function wakeupsOf(o: BenchOptions, target: BackendTarget, report: BenchReport, guard: Guard) {
  const standIn = STAND_INS.has(target.name);
  const tasks = standIn ? Math.min(o.wakeTasks, o.wakeTasksStandIn) : o.wakeTasks;
  const r = await guard("wakeups", target.name, () => runWakeups(target, wakeOptions(o, tasks)));
  if (!r) return;
  if (tasks < o.wakeTasks)
    r.note = `${tasks} tasks instead of ${o.wakeTasks} on ${target.server} (a Java stand-in)`;
  report.wakeups?.push(r);
  logWakeups(r);
}

/** Scenario 5 on the peers that wait on their server (graphile-worker, BullMQ), same servers. */
async function wakeupsPeersOf(o: BenchOptions, servers: Servers, report: BenchReport, guard: Guard) {
  for (const peer of o.peers.filter((p) => WAKE_PEERS.includes(p))) {
    const info = PEER_BACKEND[peer] === "redis" ? servers.redis : servers.postgres;
    if (!info) {
      report.skipped[`${peer} (wake-ups)`] = `no ${PEER_BACKEND[peer]} server`;
      continue;
    }
    const r = await guard("wakeups", peer, () => runWakeupsPeer(peer, info, wakeOptions(o, o.wakeTasks)));
    if (!r) continue;
    report.wakeups?.push(r);
    logWakeups(r);
  }
}

function wakeOptions(o: BenchOptions, tasks: number): WakeupsOptions {
  return {
    tasks,
    workers: o.workers,
    processes: o.processes,
    idleS: o.idleSeconds,
    gapMs: o.wakeGapMs,
    timeoutMs: o.durationS * 1000,
  };
}

function logWakeups(r: WakeupsResult): void {
  log(
    `  ${r.system}: wake-up p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms over ${r.latency.samples} tasks; ` +
      `idle ${r.idleRequestsPerSecondPerProcess ?? "-"} requests/s per process` +
      `${r.correct ? "" : `; CHECK FAILED: ${r.problems.join("; ")}`}`,
  );
}

/** Scenario 6 (4-step workflows through the reference worker) on one backend. */
async function stepsOf(o: BenchOptions, target: BackendTarget, report: BenchReport, guard: Guard) {
  const standIn = STAND_INS.has(target.name);
  const workflows = standIn ? Math.min(o.workflows, o.workflowsStandIn) : o.workflows;
  const r = await guard("steps", target.name, () =>
    runSteps(target, {
      workflows,
      workers: o.workers,
      processes: o.processes,
      batch: o.batch,
      timeoutMs: o.durationS * 1000,
      preloadConcurrency: o.preloadConcurrency,
    }),
  );
  if (!r) return;
  if (workflows < o.workflows) {
    r.note = `${workflows} workflows instead of ${o.workflows} on ${target.server} (a Java stand-in)`;
  }
  report.steps.push(r);
  logSteps(r);
}

function logSteps(r: StepsResult): void {
  log(
    `  ${r.backend}: ${r.stepsPerSecond} steps/s, ${r.workflowsPerSecond} workflows/s (${r.tasks} steps in ${r.ms} ms, ${r.workers} workers x ${r.processes} processes)` +
      `${r.exactlyOnce ? ", exactly once: ok" : `, EXACTLY-ONCE FAILED: ${r.problems.join("; ")}`}`,
  );
}

/** Scenario 6 beside the mature Sayiir engine: ours on PostgreSQL and theirs at 4 and 8 workers, one per process. */
async function stepsPeerOf(
  o: BenchOptions,
  postgres: BackendTarget,
  servers: Servers,
  report: BenchReport,
  guard: Guard,
) {
  const peer = await pythonPeer(log);
  if ("reason" in peer) {
    report.skipped["sayiir (Python)"] = `not measured: ${peer.reason}`;
    log(`SKIP sayiir (Python): not measured: ${peer.reason}`);
  }
  for (const workers of [4, 8]) {
    const ours = await guard("steps vs sayiir", `postgres, ${workers} workers`, () =>
      runSteps(
        postgres,
        {
          workflows: o.workflows,
          workers,
          processes: workers,
          batch: o.batch,
          timeoutMs: o.durationS * 1000,
          preloadConcurrency: o.preloadConcurrency,
        },
        "peer-comparison",
      ),
    );
    if (ours) {
      report.steps.push(ours);
      logSteps(ours);
    }
    if ("reason" in peer || !servers.postgres) continue;
    const theirs = await guard(
      "steps vs sayiir",
      `sayiir (Python), ${workers} workers`,
      () =>
        runPythonPeer(peer.python, servers.postgres!, {
          workflows: o.workflows,
          workers,
          timeoutMs: o.durationS * 1000,
        }),
      false,
    );
    if (!theirs) {
      report.skipped["sayiir (Python)"] = `not measured: ${report.errors.at(-1)?.message ?? "it failed"}`;
    } else {
      report.stepsPeers.push(theirs);
      log(
        `  sayiir (Python), ${workers} workers: ${theirs.stepsPerSecond} steps/s (${theirs.tasks} steps in ${theirs.ms} ms), ${theirs.duplicates} tasks run twice`,
      );
    }
  }
}

/** Scenario 6's rows beside scenario 1's completeTasks throughput of the same backend in this run. */
function relateSteps(report: BenchReport): void {
  for (const s of report.steps) {
    if (s.role !== "main") continue;
    const tp = report.throughput.find((t) => t.backend === s.backend && !t.extra);
    if (!tp) continue;
    s.completeTasksPerSecond = tp.tasksPerSecond;
    s.ratio = Math.round((s.stepsPerSecond / tp.tasksPerSecond) * 100) / 100;
  }
}

/** Writes latest.json, latest.svg and latest.md, and prints the tables. */
function writeOutputs(o: BenchOptions, report: BenchReport): void {
  // A quick run must not overwrite the committed figures of the last full run: it goes to the
  // git-ignored bench-results/ unless --out says otherwise.
  const outDir = o.outDir ? resolve(o.outDir) : join(PACKAGE_DIR, o.quick ? "bench-results" : "results");
  mkdirSync(outDir, { recursive: true });
  const json = `${JSON.stringify(report, null, 2)}\n`;
  writeFileSync(join(outDir, "latest.json"), json);
  writeFileSync(join(outDir, "latest.svg"), renderSvg(report));
  let markdown = "";
  printReport(report, (s) => {
    markdown += s;
    process.stdout.write(s);
  });
  writeFileSync(join(outDir, "latest.md"), markdown.trimStart());
  process.stdout.write(
    `\nraw figures: ${join(outDir, "latest.json")}\ntables: ${join(outDir, "latest.md")}\nchart: ${join(outDir, "latest.svg")}\n`,
  );
}

/** 1 when a correctness check failed (exactly once: scenarios 1 and 6; each task got once: 5) or a scenario broke, else 0. */
function exitCode(report: BenchReport): number {
  const broken = [
    ...report.throughput.filter((r) => !r.exactlyOnce && !r.extra).map((r) => r.backend),
    ...report.steps.filter((r) => !r.exactlyOnce).map((r) => `${r.backend} (steps, ${r.workers} workers)`),
    ...(report.wakeups ?? []).filter((r) => !r.correct).map((r) => `${r.system} (wake-ups)`),
  ];
  if (broken.length > 0) {
    process.stdout.write(`\nFAILED: exactly-once check failed on ${broken.join(", ")}\n`);
    return 1;
  }
  const fatal = report.errors.filter((e) => e.fatal);
  if (fatal.length > 0) {
    process.stdout.write(`\nFAILED: ${fatal.length} scenario run(s) broke (see above)\n`);
    return 1;
  }
  return 0;
}

async function main(): Promise<number> {
  let o: BenchOptions;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${errorMessage(error)}\n\n${USAGE}\n`);
    return 2;
  }
  if (o.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const started = new Date();
  const t0 = performance.now();
  log(
    `${o.quick ? "quick run" : "full run"}: backends ${o.backends.join(",")}; peers ${o.peers.join(",") || "none"}`,
  );
  const servers: Servers = await startServers(serverKinds(o));
  const report = newReport(o, started, servers);
  const guard = guardOf(report);
  try {
    const available = await availableTargets(o, servers, report);
    if (o.scenarios.includes("throughput")) {
      for (const target of available) await throughputOf(o, target, report, guard);
    }
    if (o.scenarios.includes("peers")) await peersOf(o, servers, report, guard);
    if (o.scenarios.includes("steps")) {
      for (const target of available) await stepsOf(o, target, report, guard);
      const postgres = available.find((t) => t.name === "postgres");
      if (o.pythonPeer && postgres) await stepsPeerOf(o, postgres, servers, report, guard);
      else if (o.pythonPeer)
        report.skipped["sayiir (Python)"] = "not measured: no PostgreSQL backend in this run";
    }
    for (const target of available) {
      if (o.scenarios.includes("discovery")) await discoveryOf(o, target, report, guard);
      if (o.scenarios.includes("snapshots")) await snapshotsOf(o, target, report, guard);
      if (o.scenarios.includes("operations")) await operationsOf(o, target, report, guard);
    }
    if (o.scenarios.includes("wakeups")) {
      for (const target of available) await wakeupsOf(o, target, report, guard);
      await wakeupsPeersOf(o, servers, report, guard);
    }
  } finally {
    await servers.stop();
  }
  relateSteps(report);
  report.targets = evaluateTargets(report);
  report.finishedAt = new Date().toISOString();
  report.durationS = Math.round((performance.now() - t0) / 100) / 10;
  writeOutputs(o, report);
  return exitCode(report);
}

main().then(
  (code) => {
    process.exitCode = code;
    // Drivers may keep sockets alive; everything is written.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (error: unknown) => {
    process.stderr.write(
      `[bench] ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
