// The independent linearizability check of the crash soak's history: a Go program
// (../linearizability, porcupine against a model of one lease with fencing tokens per
// (instance, task)) built once into a cache directory keyed by a hash of its sources, then run on a
// history file. See ../linearizability/model.go for the model and README.md ("Linearizability check").
import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { RecordedEvent } from "./recorder.ts";

const PACKAGE = join(dirname(fileURLToPath(import.meta.url)), "..");
const SOURCES = join(PACKAGE, "linearizability");

/** `go` is not installed: the check cannot run (tests fail in CI, skip elsewhere). */
export class GoUnavailable extends Error {}

export interface Blocked {
  op: string;
  reason: string;
}

export interface LinearizabilityViolation {
  instance: string;
  task: string;
  /** Every operation on that (instance, task), by call time. */
  operations: string[];
  /** One longest linearizable prefix, the lease state after it, and why nothing can come next. */
  prefix: string[];
  state: string;
  blocked: Blocked[];
  html?: string;
}

export interface LinearizabilityReport {
  verdict: "ok" | "violation" | "unknown";
  events: number;
  brokenLines: number;
  operations: number;
  /** Operations of unknown outcome (no answer): they may take effect any time after their call. */
  pending: number;
  skipped: Record<string, number>;
  partitions: number;
  largestPartition: number;
  slowestPartitionMs: number;
  violations: LinearizabilityViolation[];
  /** Partitions porcupine did not decide within the timeout. */
  unknown: Array<{ instance: string; task: string }>;
  skewMs: number;
  timeoutMs: number;
  /** Inside the Go program (read, build the history, check). */
  elapsedMs: number;
  /** The build (0 when cached) and the whole run, measured here. */
  buildMs: number;
  runMs: number;
}

export interface CheckOptions {
  /** Tolerated difference between the workers' clock and the store's (default 250 ms). */
  skewMs?: number;
  /** Per (instance, task): past it the verdict is "unknown" (default 10 s). */
  timeoutMs?: number;
  /** Writes porcupine's HTML visualization of each violation there. */
  htmlDir?: string;
}

let go: string | null | undefined;

/** The go command: SAYIIR_GO if set (only it), else `go` on PATH, else /usr/local/go/bin/go; null if none runs. */
export function findGo(): string | null {
  go ??= probeGo();
  return go;
}

function probeGo(): string | null {
  const explicit = process.env.SAYIIR_GO;
  const candidates = explicit !== undefined && explicit !== "" ? [explicit] : ["go", "/usr/local/go/bin/go"];
  for (const candidate of candidates) {
    const probe = spawnSync(candidate, ["version"], { encoding: "utf8", timeout: 30_000 });
    if (probe.status === 0) return candidate;
  }
  return null;
}

/** The hash of the checker's sources (tests excluded): the cache key of its binary. */
async function sourceHash(): Promise<string> {
  const hash = createHash("sha256");
  const names = (await readdir(SOURCES))
    .filter((n) => n === "go.mod" || n === "go.sum" || (n.endsWith(".go") && !n.endsWith("_test.go")))
    .sort();
  for (const name of names) {
    hash.update(`${name}\0`);
    hash.update(await readFile(join(SOURCES, name)));
  }
  return hash.digest("hex").slice(0, 16);
}

function run(
  file: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...options, maxBuffer: 256 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code !== "number") reject(error);
      else resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr });
    });
  });
}

let built: Promise<{ binary: string; buildMs: number }> | undefined;

/**
 * Builds the checker (once per source hash; the binary is cached in node_modules/.cache, or the
 * system's temporary directory) and returns its path. Offline once porcupine is in Go's module cache.
 */
export function buildChecker(): Promise<{ binary: string; buildMs: number }> {
  built ??= (async () => {
    const go = findGo();
    if (go === null)
      throw new GoUnavailable("the go command was not found (SAYIIR_GO, PATH, /usr/local/go/bin)");
    const hash = await sourceHash();
    let cache = join(PACKAGE, "node_modules", ".cache", "sayiir-linearizability");
    try {
      await mkdir(cache, { recursive: true });
    } catch {
      cache = join(tmpdir(), "sayiir-linearizability");
      await mkdir(cache, { recursive: true });
    }
    const binary = join(cache, `linearizability-${hash}`);
    if (existsSync(binary)) return { binary, buildMs: 0 };
    const started = Date.now();
    // Built under a unique name and renamed: parallel test files may build at the same time.
    const partial = `${binary}.${process.pid}.${Date.now()}.tmp`;
    const env = {
      ...process.env,
      GOTOOLCHAIN: "local",
      GOFLAGS: "-buildvcs=false -mod=readonly",
      CGO_ENABLED: "0",
    };
    const result = await run(go, ["build", "-o", partial, "."], { cwd: SOURCES, env, timeout: 300_000 });
    if (result.code !== 0) {
      await rm(partial, { force: true });
      throw new Error(`go build of the linearizability checker failed:\n${result.stderr}`);
    }
    await rename(partial, binary);
    // Binaries of older sources are never used again.
    for (const name of await readdir(cache)) {
      if (name.startsWith("linearizability-") && !name.endsWith(".tmp") && join(cache, name) !== binary) {
        await rm(join(cache, name), { force: true });
      }
    }
    return { binary, buildMs: Date.now() - started };
  })();
  built.catch(() => {
    built = undefined;
  });
  return built;
}

/** Runs the checker on history files (JSON lines) or directories of per-worker logs. */
export async function checkLinearizability(
  paths: string | string[],
  options: CheckOptions = {},
): Promise<LinearizabilityReport> {
  const waited = Date.now();
  const { binary, buildMs: buildTook } = await buildChecker();
  // The build happens once per process: later calls only waited for it (or not at all).
  const buildMs = Math.min(buildTook, Date.now() - waited);
  const args = [
    "-json",
    "-skew",
    `${options.skewMs ?? 250}ms`,
    "-timeout",
    `${options.timeoutMs ?? 10_000}ms`,
  ];
  if (options.htmlDir !== undefined) args.push("-html", options.htmlDir);
  const started = Date.now();
  const result = await run(binary, [...args, ...(Array.isArray(paths) ? paths : [paths])]);
  if (result.code !== 0 && result.code !== 1) {
    throw new Error(`the linearizability checker failed (exit ${result.code}):\n${result.stderr}`);
  }
  const report = JSON.parse(result.stdout) as Omit<LinearizabilityReport, "buildMs" | "runMs">;
  return { ...report, buildMs, runMs: Date.now() - started };
}

/**
 * The soak's use: checks a history file and logs the figures. Without Go it fails in CI
 * (CI=true) and elsewhere answers null after printing why the check was skipped.
 */
export async function checkSoakHistory(path: string, label: string): Promise<LinearizabilityReport | null> {
  if (findGo() === null) {
    const why = "the go command was not found (SAYIIR_GO, PATH, /usr/local/go/bin)";
    if (process.env.CI === "true") throw new GoUnavailable(`${label}: ${why}; CI must have Go`);
    console.warn(`[reliability] ${label}: linearizability check SKIPPED: ${why}`);
    return null;
  }
  const report = await checkLinearizability(path);
  console.info(
    `[reliability] ${label}: linearizability ${report.verdict}: ${report.operations} operations ` +
      `(${report.pending} without answer) on ${report.partitions} (instance, task) keys, ` +
      `checked in ${report.runMs} ms (build ${report.buildMs} ms)`,
  );
  return report;
}

/** A violation, readably: the key, why nothing could come next, and every operation on that key. */
export function describeViolation(v: LinearizabilityViolation): string {
  return [
    `${v.instance} / ${v.task}`,
    ...v.blocked.map((b) => `  cannot come next: ${b.op}: ${b.reason}`),
    // No prefix when the detailed re-check timed out (older checkers sent null).
    `  after ${v.prefix?.length ?? 0} operations the lease is: ${v.state}`,
    ...v.operations.map((op) => `    ${op}`),
  ].join("\n");
}

/** What the soak knows beyond the recorder's events (structural: the soak's own types may grow). */
export interface SoakExtras {
  /** The worker loops' events: `retrying` says a failTasks landed and released that claim. */
  loop?: ReadonlyArray<{
    type: string;
    now: number;
    workerId?: string;
    instanceId?: string;
    taskId?: string;
    token?: number;
  }>;
  /** The controller's plans by instance: a landed cancel revokes every claim of its instance. */
  plans?: ReadonlyMap<string, { kind: string; done?: { q: number; r: number; outcome: string } }>;
}

/**
 * The soak's history in the checker's format: the recorder's events, each failTasks that landed as
 * a fenced "fail" write with its release (window: from its claim's answer to the loop's report),
 * and each cancel.
 */
export function soakHistory(events: readonly RecordedEvent[], extras: SoakExtras = {}): string[] {
  const lines = events.map((e) => JSON.stringify(e));
  const claimedAt = new Map<string, number>();
  for (const e of events) if (e.k === "claim") claimedAt.set(`${e.i}\0${e.t}\0${e.tok}`, e.r);
  // A failTasks request a worker logged before sending it (soak/logs.ts "fail-req"): its call
  // starts there. One that no `retrying` report answers (the worker was killed meanwhile) is an
  // unanswered release: it may have landed at any time after its request, or never.
  const key = (e: { instanceId?: string; taskId?: string; token?: number }) =>
    `${e.instanceId}\0${e.taskId}\0${e.token}`;
  const requested = new Map<string, number>();
  const answered = new Set<string>();
  for (const e of extras.loop ?? []) {
    if (e.type === "fail-req") requested.set(key(e), e.now);
    if (e.type === "retrying") answered.add(key(e));
  }
  for (const e of extras.loop ?? []) {
    if (e.type !== "fail-req" || answered.has(key(e))) continue;
    if (e.workerId === undefined || e.instanceId === undefined || e.taskId === undefined) continue;
    lines.push(JSON.stringify({ k: "release-req", w: e.workerId, i: e.instanceId, t: e.taskId, q: e.now }));
  }
  for (const e of extras.loop ?? []) {
    if (e.type !== "retrying" || e.instanceId === undefined || e.taskId === undefined) continue;
    if (e.workerId === undefined || e.token === undefined) continue;
    const q = requested.get(key(e)) ?? claimedAt.get(key(e)) ?? e.now;
    const base = { w: e.workerId, i: e.instanceId, t: e.taskId, q };
    lines.push(
      JSON.stringify({ k: "release-req", ...base }),
      JSON.stringify({ k: "write", op: "fail", ...base, tok: e.token, ok: true, code: null, r: e.now }),
      JSON.stringify({ k: "release", ...base, r: e.now }),
    );
  }
  for (const [instance, plan] of extras.plans ?? []) {
    const done = plan.done;
    if (plan.kind !== "cancel" || done === undefined) continue;
    // "conflict": refused, nothing revoked; "unknown": may have landed, any time after its call.
    const answer = done.outcome === "unknown" ? {} : { ok: done.outcome === "landed", r: done.r };
    lines.push(JSON.stringify({ k: "cancel", i: instance, q: done.q, ...answer }));
  }
  return lines;
}

/** Writes history lines to a file (JSON lines). */
export async function writeHistory(path: string, lines: readonly string[]): Promise<void> {
  await writeFile(path, lines.length === 0 ? "" : `${lines.join("\n")}\n`);
}
