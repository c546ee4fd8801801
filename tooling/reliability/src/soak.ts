// Crash soak: 8 worker processes run the reference worker loop on one backend while a random one is
// SIGKILLed (or frozen past its lease) every few seconds and restarted, and a controller in this
// process cancels, pauses and resumes workflows and sends them events. Every claim and write is
// recorded with its token; the analysis then proves that no two workers ever held a live claim on
// one task at once, that no fenced-out write landed, that the newer operations kept their promises
// (operations.ts) and that every workflow ended as it must.
//
// Modules: soak/workload.ts (the workflows), soak/feeder.ts and soak/controller.ts (what the parent
// does), soak/fleet.ts (the worker processes), soak/analysis.ts, soak/operations.ts and
// soak/outcomes.ts (the checks), soak/logs.ts.
//
// Long run from the command line (servers from SAYIIR_TEST_*_URL, the cluster's nodes from
// SAYIIR_TEST_REDIS_CLUSTER_NODES, e.g. from `./dev serve <kind>`); it prints the report as JSON,
// with the verdict of the linearizability check of its history, and exits 1 on any violation:
//   node src/soak.ts --backend sqlite --seconds 600
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { envOfUrls, parseTargetName, type ServerUrls, type TargetName, urlsFromEnv } from "@sayiir/backends";
import { checkSoakHistory, describeViolation, soakHistory, writeHistory } from "./linearizability.ts";
import { BACKENDS } from "./registry.ts";
import { analyze } from "./soak/analysis.ts";
import { Controller } from "./soak/controller.ts";
import { Feeder } from "./soak/feeder.ts";
import { Fleet } from "./soak/fleet.ts";
import { dumpViolations, failReleases, readLogs } from "./soak/logs.ts";
import { checkOperations, type OperationFigures } from "./soak/operations.ts";
import { checkOutcomes, drain } from "./soak/outcomes.ts";
import { paceOf, type WorkflowKind } from "./soak/workload.ts";

export { analyze } from "./soak/analysis.ts";
export { checkOperations } from "./soak/operations.ts";

export interface SoakOptions {
  backend: TargetName;
  urls: ServerUrls;
  seconds: number;
  workers?: number;
  /** A random worker is killed every killMinMs..killMaxMs. */
  killMinMs?: number;
  killMaxMs?: number;
  /** New workflows started per second while the soak runs (default: paceOf(backend)). */
  workflowsPerSecond?: number;
  /** Lease of every claim (default: paceOf(backend)). */
  leaseMs?: number;
  /** After the timed part, how long the survivors get to finish every workflow. */
  drainTimeoutMs?: number;
  log?: (line: string) => void;
  /** Writes the history for the linearizability checker (src/linearizability.ts) to this file. */
  historyFile?: string;
}

export interface SoakReport extends OperationFigures {
  backend: TargetName;
  seconds: number;
  workers: number;
  kills: number;
  /** Workers frozen (SIGSTOP) past their lease, then resumed (SIGCONT): stale workers that must be fenced out. */
  pauses: number;
  workflows: number;
  completed: number;
  /** Workflows the controller cancelled (they end Cancelled). */
  cancelled: number;
  /** Workflows left out of the checks: an event send failed with its outcome unknown. */
  uncertain: number;
  wrongOutput: number;
  claims: number;
  /** Claims whose task had an earlier claim that was never released (a crashed worker's lease taken over). */
  takeovers: number;
  extends: number;
  fencedWrites: number;
  /** Fenced writes the backend refused with ClaimLostError (a stale worker stopped by its token). */
  refusedWrites: number;
  /** Heartbeats refused with ClaimLostError (a stale worker told its lease is gone before it wrote). */
  refusedExtends: number;
  violations: string[];
  /** How long the survivors took to settle every workflow after the timed part. */
  drainMs: number;
  ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The timed part: new workflows every second, a worker struck every killMin..killMax ms. */
async function chaos(options: SoakOptions, started: number, fleet: Fleet, feeder: Feeder): Promise<void> {
  const killMin = options.killMinMs ?? 1500;
  const killMax = options.killMaxMs ?? 3500;
  const perSecond = options.workflowsPerSecond ?? 6;
  const end = started + options.seconds * 1000;
  let nextKill = Date.now() + killMin + Math.random() * (killMax - killMin);
  let nextFeed = Date.now() + 1000;
  while (Date.now() < end) {
    await sleep(50);
    if (Date.now() >= nextFeed) {
      await feeder.add(perSecond);
      nextFeed += 1000;
    }
    if (Date.now() >= nextKill) {
      await fleet.strike();
      nextKill = Date.now() + killMin + Math.random() * (killMax - killMin);
    }
  }
}

/** Runs the controller's due actions every 50 ms until `stop` resolves. */
async function control(controller: Controller, stop: { stopped: boolean }): Promise<void> {
  while (!stop.stopped) {
    await controller.tick().catch(() => {});
    await sleep(50);
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const pace = paceOf(options.backend);
  const leaseMs = options.leaseMs ?? pace.leaseMs;
  const workflowsPerSecond = options.workflowsPerSecond ?? pace.workflowsPerSecond;
  const workers = options.workers ?? 8;
  const log = options.log ?? ((line: string) => console.info(line));
  const started = Date.now();
  const subject = await BACKENDS[options.backend].create(options.urls, { timeoutMs: 5000 });
  const admin = subject.backend;
  const logDir = await mkdtemp(join(tmpdir(), "sayiir-soak-"));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SAYIIR_SOAK_LEASE_MS: String(leaseMs),
    SAYIIR_SOAK_WORK_MS: process.env.SAYIIR_SOAK_WORK_MS ?? "20,400",
    ...envOfUrls(options.urls),
  };
  const fleet = new Fleet({
    target: options.backend,
    storage: subject.storage,
    logDir,
    env,
    leaseMs,
    workers,
  });
  const controller = new Controller(admin);
  const feeder = new Feeder(admin, (id, s) => controller.onStart(id, s));
  const stop = { stopped: false };
  let controlling: Promise<void> = Promise.resolve();
  try {
    await feeder.add(workflowsPerSecond * 2);
    fleet.startAll();
    controlling = control(controller, stop);
    await chaos({ ...options, workflowsPerSecond }, started, fleet, feeder);
    log(
      `[soak] ${options.backend}: timed part over (${fleet.kills} kills, ${feeder.started.size} workflows); draining`,
    );
    // Drain: the current workers (not killed any more) settle every workflow.
    const drained = Date.now();
    await drain(admin, feeder.started, controller, Date.now() + (options.drainTimeoutMs ?? 90_000));
    const drainMs = Date.now() - drained;
    stop.stopped = true;
    await controlling;
    await fleet.killAll();
    await sleep(100); // paused workers' SIGCONT timers
    const outcomes = await checkOutcomes(admin, feeder.started, controller);
    const { events, loop } = await readLogs(logDir);
    if (options.historyFile !== undefined)
      await writeHistory(options.historyFile, soakHistory(events, { loop, plans: controller.plans }));
    // failTasks releases its claim too: its requests, from the loops' logs, count as release requests.
    const analysis = analyze([...events, ...failReleases(loop)]);
    const kinds = new Map<string, WorkflowKind>([...feeder.started].map(([id, s]) => [id, s.kind]));
    const operations = checkOperations(events, loop, controller.plans, kinds);
    const violations = [...outcomes.violations, ...analysis.violations, ...operations.violations];
    const report: SoakReport = {
      backend: options.backend,
      seconds: options.seconds,
      workers,
      kills: fleet.kills,
      pauses: fleet.pauses,
      workflows: feeder.started.size,
      completed: outcomes.completed,
      cancelled: outcomes.cancelled,
      uncertain: outcomes.uncertain,
      wrongOutput: outcomes.wrongOutput,
      claims: analysis.claims,
      takeovers: analysis.takeovers,
      extends: analysis.extends,
      fencedWrites: analysis.fencedWrites,
      refusedWrites: analysis.refusedWrites,
      refusedExtends: analysis.refusedExtends,
      ...operations.figures,
      violations,
      drainMs,
      ms: Date.now() - started,
    };
    log(`[soak] ${JSON.stringify({ ...report, violations: report.violations.length })}`);
    for (const v of violations.slice(0, 20)) log(`[soak] VIOLATION ${v}`);
    if (feeder.retries > 0)
      log(`[soak] ${options.backend}: the feeder retried ${feeder.retries} busy writes`);
    if (violations.length > 0) {
      log(
        `[soak] events of the instances involved: ${await dumpViolations(options.backend, violations, events)}`,
      );
    }
    return report;
  } finally {
    stop.stopped = true;
    await controlling.catch(() => {});
    await fleet.killAll();
    await admin.close();
    await subject.cleanup().catch(() => {});
    await rm(logDir, { recursive: true, force: true });
  }
}

// Command line: node src/soak.ts --backend sqlite --seconds 600
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      backend: { type: "string", default: "sqlite" },
      seconds: { type: "string", default: process.env.SAYIIR_SOAK_SECONDS ?? "300" },
      workers: { type: "string", default: "8" },
      history: { type: "string" },
      "per-second": { type: "string" },
      "lease-ms": { type: "string" },
    },
  });
  const backend = parseTargetName(values.backend);
  // The history always goes to a file: the independent check (porcupine) reads it after the run.
  const history = values.history ?? join(tmpdir(), `sayiir-soak-history-${backend}-${Date.now()}.jsonl`);
  const report = await runSoak({
    backend,
    urls: urlsFromEnv(),
    seconds: Number(values.seconds),
    workers: Number(values.workers),
    ...(values["per-second"] === undefined ? {} : { workflowsPerSecond: Number(values["per-second"]) }),
    ...(values["lease-ms"] === undefined ? {} : { leaseMs: Number(values["lease-ms"]) }),
    historyFile: history,
  });
  const lin = await checkSoakHistory(history, `crash soak ${backend}`);
  const linearizability =
    lin === null
      ? { verdict: "not checked (no go command)" }
      : { verdict: lin.verdict, operations: lin.operations, keys: lin.partitions, runMs: lin.runMs };
  for (const v of lin?.violations ?? []) console.error(describeViolation(v));
  console.info(JSON.stringify({ ...report, linearizability, history }, null, 2));
  const clean = report.violations.length === 0 && (lin === null || lin.verdict === "ok");
  if (clean && values.history === undefined) await rm(history, { force: true });
  process.exit(clean ? 0 : 1);
}
