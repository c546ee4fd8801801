// Crash soak: 8 worker processes run the reference worker loop on one backend while a random one is
// SIGKILLed every few seconds and restarted. Every claim and write is recorded with its token; the
// analysis then proves that no two workers ever held a live claim on one task at once, that no
// fenced-out write landed, and that every workflow completed with the right output.
//
// Long run from the command line (servers from SAYIIR_TEST_*_URL):
//   node src/soak.ts --backend sqlite --seconds 600
import { type ChildProcess, fork } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  type BackendName,
  envOfUrls,
  parseBackendName,
  type ServerUrls,
  urlsFromEnv,
} from "@sayiir/backends";
import { bytesEqual, type PersistentBackend } from "@sayiir/persistence-core";
import { bytes, demoWorkflows, evaluate, startWorkflow, type WorkflowDefinition } from "@sayiir/worker";
import type { RecordedEvent } from "./recorder.ts";
import { BACKENDS } from "./registry.ts";

const HERE = dirname(fileURLToPath(import.meta.url));

export interface SoakOptions {
  backend: BackendName;
  urls: ServerUrls;
  seconds: number;
  workers?: number;
  /** A random worker is killed every killMinMs..killMaxMs. */
  killMinMs?: number;
  killMaxMs?: number;
  /** New workflows started per second while the soak runs. */
  workflowsPerSecond?: number;
  leaseMs?: number;
  /** After the timed part, how long the survivors get to finish every workflow. */
  drainTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface SoakReport {
  backend: BackendName;
  seconds: number;
  workers: number;
  kills: number;
  /** Workers frozen (SIGSTOP) past their lease, then resumed (SIGCONT): stale workers that must be fenced out. */
  pauses: number;
  workflows: number;
  completed: number;
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
  ms: number;
}

async function killAndWait(child: ChildProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The worker processes, one per slot, and the chaos done to them. */
class Fleet {
  readonly children = new Map<string, ChildProcess>();
  readonly paused = new Set<ChildProcess>();
  kills = 0;
  pauses = 0;
  #generation = 0;
  readonly #args: [BackendName, string, string];
  readonly #env: NodeJS.ProcessEnv;
  readonly #leaseMs: number;

  constructor(
    backend: BackendName,
    storage: string,
    logDir: string,
    env: NodeJS.ProcessEnv,
    leaseMs: number,
  ) {
    this.#args = [backend, storage, logDir];
    this.#env = env;
    this.#leaseMs = leaseMs;
  }

  /** Starts a worker process in `slot` (replacing whatever was there). */
  start(slot: number): void {
    const [backend, storage, logDir] = this.#args;
    const workerId = `w${slot}-g${this.#generation++}`;
    const child = fork(
      join(HERE, "soak-worker.ts"),
      [backend, storage, workerId, join(logDir, `${workerId}.log`)],
      { env: this.#env, stdio: ["ignore", "ignore", "inherit", "ipc"] },
    );
    this.children.set(`slot${slot}`, child);
  }

  /** Freezes the worker in `slot` past its lease (then resumes it), or kills and restarts it. */
  async strike(slot: number): Promise<void> {
    const victim = this.children.get(`slot${slot}`)!;
    if (Math.random() < 0.3 && !this.paused.has(victim)) {
      // Freeze it past its lease: its claims are taken over; when it wakes, its writes must be refused.
      this.paused.add(victim);
      this.pauses++;
      victim.kill("SIGSTOP");
      setTimeout(
        () => {
          this.paused.delete(victim);
          if (victim.exitCode === null && victim.signalCode === null) victim.kill("SIGCONT");
        },
        this.#leaseMs * (1.5 + Math.random()),
      );
      return;
    }
    if (this.paused.has(victim)) victim.kill("SIGCONT");
    await killAndWait(victim);
    this.kills++;
    this.start(slot);
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.children.values()].map((c) => killAndWait(c, "SIGKILL")));
  }
}

type Expected = Map<string, { definition: WorkflowDefinition; input: Uint8Array }>;

/** Starts new workflows (pipelines and fan-outs in turn) and remembers them. */
class Feeder {
  readonly expected: Expected = new Map();
  retries = 0;
  #next = 0;
  readonly #admin: PersistentBackend;
  readonly #workflows = demoWorkflows({ workMs: [1, 30] });

  constructor(admin: PersistentBackend) {
    this.#admin = admin;
  }

  async add(n: number): Promise<void> {
    const { pipeline, fanout } = this.#workflows;
    for (let k = 0; k < n; k++) {
      const id = `soak/wf-${this.#next}`;
      const definition = this.#next % 2 === 0 ? pipeline : fanout;
      const input = bytes(`order-${this.#next}`);
      this.#next++;
      // The feeder is not under test: a busy store (SQLite's lock held by a frozen worker) is retried.
      for (let attempt = 0; ; attempt++) {
        try {
          await startWorkflow(this.#admin, definition, id, input);
          break;
        } catch (error) {
          if (attempt >= 20 || (error as { code?: string }).code !== "BACKEND") throw error;
          this.retries++;
          await sleep(100);
        }
      }
      this.expected.set(id, { definition, input });
    }
  }
}

/** The timed part: new workflows every second, a worker struck every killMin..killMax ms. */
async function chaos(options: SoakOptions, started: number, fleet: Fleet, feeder: Feeder): Promise<void> {
  const workers = options.workers ?? 8;
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
      await fleet.strike(Math.floor(Math.random() * workers));
      nextKill = Date.now() + killMin + Math.random() * (killMax - killMin);
    }
  }
}

/** Waits until every expected workflow is Completed, or the deadline. */
async function drain(admin: PersistentBackend, expected: Expected, deadline: number): Promise<void> {
  let pending = [...expected.keys()];
  while (pending.length > 0 && Date.now() < deadline) {
    const still: string[] = [];
    for (const id of pending) {
      const s = await admin.loadSnapshot(id).catch(() => null);
      if (s === null || s.state.kind !== "Completed") still.push(id);
    }
    pending = still;
    if (pending.length > 0) await sleep(250);
  }
}

/** Every expected workflow is Completed with the output evaluate() predicts. */
async function checkOutcomes(admin: PersistentBackend, expected: Expected) {
  let completed = 0;
  let wrongOutput = 0;
  const violations: string[] = [];
  for (const [id, { definition, input }] of expected) {
    const s = await admin.loadSnapshot(id).catch(() => null);
    if (s?.state.kind === "Completed") {
      completed++;
      const want = await evaluate(definition, input);
      if (!bytesEqual(s.state.finalOutput, want)) {
        wrongOutput++;
        violations.push(`${id}: wrong final output`);
      }
    } else {
      violations.push(`${id}: not completed (${s === null ? "missing" : s.state.kind})`);
    }
  }
  return { completed, wrongOutput, violations };
}

/** Every event the workers recorded. */
async function readEvents(logDir: string): Promise<RecordedEvent[]> {
  const events: RecordedEvent[] = [];
  for (const file of await readdir(logDir)) {
    const text = await readFile(join(logDir, file), "utf8");
    for (const line of text.split("\n")) {
      if (line.length === 0) continue;
      try {
        events.push(JSON.parse(line) as RecordedEvent);
      } catch {
        // A line cut by SIGKILL mid-write (writeSync makes this very unlikely): not an event.
      }
    }
  }
  return events;
}

/** Writes the events of the instances a violation names to a file; returns its path. */
async function dumpViolations(
  backend: string,
  violations: string[],
  events: RecordedEvent[],
): Promise<string> {
  const dump = join(tmpdir(), `sayiir-soak-violations-${backend}-${Date.now()}.jsonl`);
  const involved = new Set(violations.map((v) => /soak\/wf-\d+/.exec(v)?.[0]).filter(Boolean));
  const lines = events
    .filter((e) => [...involved].some((id) => e.i.startsWith(id!)))
    .sort((a, b) => a.q - b.q)
    .map((e) => JSON.stringify(e));
  await writeFile(dump, `${lines.join("\n")}\n`);
  return dump;
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const leaseMs = options.leaseMs ?? 1000;
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
  const fleet = new Fleet(options.backend, subject.storage, logDir, env, leaseMs);
  const feeder = new Feeder(admin);
  try {
    await feeder.add((options.workflowsPerSecond ?? 6) * 2);
    for (let slot = 0; slot < (options.workers ?? 8); slot++) fleet.start(slot);
    await chaos(options, started, fleet, feeder);
    log(
      `[soak] ${options.backend}: timed part over (${fleet.kills} kills, ${feeder.expected.size} workflows); draining`,
    );
    // Drain: the current workers (not killed any more) finish every workflow.
    await drain(admin, feeder.expected, Date.now() + (options.drainTimeoutMs ?? 90_000));
    await fleet.killAll();
    await sleep(100); // paused workers' SIGCONT timers
    const outcomes = await checkOutcomes(admin, feeder.expected);
    const events = await readEvents(logDir);
    const analysis = analyze(events);
    const violations = [...outcomes.violations, ...analysis.violations];
    const report: SoakReport = {
      backend: options.backend,
      seconds: options.seconds,
      workers: options.workers ?? 8,
      kills: fleet.kills,
      pauses: fleet.pauses,
      workflows: feeder.expected.size,
      completed: outcomes.completed,
      wrongOutput: outcomes.wrongOutput,
      claims: analysis.claims,
      takeovers: analysis.takeovers,
      extends: analysis.extends,
      fencedWrites: analysis.fencedWrites,
      refusedWrites: analysis.refusedWrites,
      refusedExtends: analysis.refusedExtends,
      violations,
      ms: Date.now() - started,
    };
    log(`[soak] ${JSON.stringify({ ...report, violations: report.violations.length })}`);
    for (const v of violations.slice(0, 20)) log(`[soak] VIOLATION ${v}`);
    if (feeder.retries > 0)
      log(`[soak] ${options.backend}: the feeder retried ${feeder.retries} busy writes`);
    if (analysis.violations.length > 0) {
      log(
        `[soak] events of the instances involved: ${await dumpViolations(options.backend, analysis.violations, events)}`,
      );
    }
    return report;
  } finally {
    await fleet.killAll();
    await admin.close();
    await subject.cleanup().catch(() => {});
    await rm(logDir, { recursive: true, force: true });
  }
}

type Claim = Extract<RecordedEvent, { k: "claim" }>;

/** The checks over the recorded history. Sound: every reported violation is a real one. */
export function analyze(events: RecordedEvent[]): {
  claims: number;
  takeovers: number;
  extends: number;
  fencedWrites: number;
  refusedWrites: number;
  refusedExtends: number;
  violations: string[];
} {
  const violations: string[] = [];
  const key = (i: string, t: string) => `${i}\u0000${t}`;
  const claims = new Map<string, Claim[]>();
  const extendsBy = new Map<string, Array<Extract<RecordedEvent, { k: "extend" }>>>();
  const releaseReqs = new Map<string, number[]>();
  let claimCount = 0;
  let extendCount = 0;
  for (const e of events) {
    if (e.k === "claim") {
      claimCount++;
      const list = claims.get(key(e.i, e.t)) ?? [];
      list.push(e);
      claims.set(key(e.i, e.t), list);
    } else if (e.k === "extend") {
      extendCount++;
      const k = `${key(e.i, e.t)}\u0000${e.tok}`;
      const list = extendsBy.get(k) ?? [];
      list.push(e);
      extendsBy.set(k, list);
    } else if (e.k === "release-req") {
      const k = `${key(e.i, e.t)}\u0000${e.w}`;
      const list = releaseReqs.get(k) ?? [];
      list.push(e.q);
      releaseReqs.set(k, list);
    }
  }
  let takeovers = 0;
  for (const [k, list] of claims) {
    list.sort((a, b) => a.tok - b.tok);
    for (let n = 0; n < list.length; n++) {
      const a = list[n]!;
      const b = list[n + 1];
      if (b !== undefined && b.tok === a.tok) {
        violations.push(`token ${a.tok} on ${k.replace("\u0000", "/")} granted twice (${a.w} and ${b.w})`);
        continue;
      }
      if (n > 0 && list[n - 1]!.ca > a.ca) {
        violations.push(
          `tokens on ${k.replace("\u0000", "/")} do not follow claim order (${list[n - 1]!.tok} at ${list[n - 1]!.ca}, ${a.tok} at ${a.ca})`,
        );
      }
      if (b === undefined) continue;
      // Did a release request of a's holder come before b's claim returned? Then a may have been released.
      const released = (releaseReqs.get(`${k}\u0000${a.w}`) ?? []).some((q) => q >= a.q && q <= b.r);
      if (!released) takeovers++;
      // a's latest known expiry (lower bound of the real one: an extension whose answer was lost is unknown).
      let expiry = a.ea ?? Number.POSITIVE_INFINITY;
      for (const x of extendsBy.get(`${k}\u0000${a.tok}`) ?? []) {
        if (x.ea === null) expiry = Number.POSITIVE_INFINITY;
        else expiry = Math.max(expiry, x.ea);
        // The extension happened at server time ea - d; it must not renew a claim someone else already took.
        if (x.ea !== null && x.ea - x.d > b.ca) {
          violations.push(
            `${a.w} extended token ${a.tok} on ${k.replace("\u0000", "/")} at ${x.ea - x.d}, after ${b.w} claimed it (token ${b.tok}) at ${b.ca}`,
          );
        }
      }
      if (!released && b.ca < expiry) {
        violations.push(
          `overlap on ${k.replace("\u0000", "/")}: ${b.w} claimed (token ${b.tok}) at ${b.ca} while ${a.w}'s token ${a.tok} was live until ${expiry}`,
        );
      }
    }
  }
  let fencedWrites = 0;
  let refusedWrites = 0;
  for (const e of events) {
    if (e.k !== "write" || e.tok === null || e.t === null) continue;
    fencedWrites++;
    if (!e.ok && e.code === "CLAIM_LOST") refusedWrites++;
    if (!e.ok) continue;
    // A successful fenced write sent after a newer claim on that task had been granted: it must have been refused.
    const newer = (claims.get(key(e.i, e.t)) ?? []).find((c) => c.tok > e.tok! && c.r < e.q);
    if (newer !== undefined) {
      violations.push(
        `fenced-out write landed: ${e.w} wrote ${e.op} of ${e.i} with token ${e.tok} at ${e.q}, after ${newer.w} got token ${newer.tok} at ${newer.r}`,
      );
    }
  }
  const refusedExtends = events.filter((e) => e.k === "extend-fail" && e.code === "CLAIM_LOST").length;
  return {
    claims: claimCount,
    takeovers,
    extends: extendCount,
    fencedWrites,
    refusedWrites,
    refusedExtends,
    violations,
  };
}

// Command line: node src/soak.ts --backend sqlite --seconds 600
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      backend: { type: "string", default: "sqlite" },
      seconds: { type: "string", default: process.env.SAYIIR_SOAK_SECONDS ?? "300" },
      workers: { type: "string", default: "8" },
    },
  });
  const report = await runSoak({
    backend: parseBackendName(values.backend),
    urls: urlsFromEnv(),
    seconds: Number(values.seconds),
    workers: Number(values.workers),
  });
  console.info(JSON.stringify(report, null, 2));
  process.exit(report.violations.length === 0 ? 0 : 1);
}
