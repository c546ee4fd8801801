// Scenario 6's peer: the mature Sayiir engine (PyPI `sayiir` 1.0.0: a Rust core with its own
// PostgreSQL backend, driven from Python) on the same PostgreSQL server, in a database of its own.
// The benchmark creates the virtualenv itself (tooling/bench/python/.venv: `python3 -m venv`, then
// `pip install sayiir==1.0.0` from PyPI) and runs python/sayiir_peer.py, which submits the 4-step
// pipelines, runs one sayiir Worker per process and counts every task function's runs.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pg from "pg";
import type { ServerInfo } from "./servers.ts";
import { errorMessage, runId } from "./util.ts";

const run = promisify(execFile);
const PYTHON_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../python");
const VENV = join(PYTHON_DIR, ".venv");
const SCRIPT = join(PYTHON_DIR, "sayiir_peer.py");
export const SAYIIR_PY_VERSION = "1.0.0";
/**
 * The worker's poll interval (s). Its default is 5 s; measured here, 4 workers ran 800 steps at
 * 66/s with 0.05 s, 284/s with 0.01 s and about 330/s with 0.005 or 0.001 s: 0.005 s is its best.
 */
export const SAYIIR_PY_POLL_S = 0.005;

export interface PythonPeerResult {
  engine: string;
  workers: number;
  processes: number;
  workflows: number;
  tasks: number;
  ms: number;
  stepsPerSecond: number;
  workflowsPerSecond: number;
  /** Tasks whose function ran more than once, and the extra runs. */
  duplicates: number;
  extraRuns: number;
  neverRun: number;
  notCompleted: number;
  wrongOutput: number;
  settings: string;
}

/** The virtualenv's python with sayiir installed (created on first use), or why there is none. */
export async function pythonPeer(log: (m: string) => void): Promise<{ python: string } | { reason: string }> {
  const python = join(VENV, "bin", "python");
  const check = async () => {
    const { stdout } = await run(python, ["-c", "import sayiir; print(sayiir.__version__)"]);
    return stdout.trim();
  };
  try {
    if (existsSync(python) && (await check()) === SAYIIR_PY_VERSION) return { python };
  } catch {
    // (re)create below
  }
  try {
    log(`creating ${VENV} (python3 -m venv; pip install sayiir==${SAYIIR_PY_VERSION})`);
    await run("python3", ["-m", "venv", "--clear", VENV], { timeout: 120_000 });
    await run(python, ["-m", "pip", "install", "-q", `sayiir==${SAYIIR_PY_VERSION}`], { timeout: 600_000 });
    const version = await check();
    if (version !== SAYIIR_PY_VERSION) return { reason: `pip installed sayiir ${version}` };
    return { python };
  } catch (error) {
    return {
      reason: `cannot set up the Python peer: ${errorMessage(error).split("\n").slice(0, 3).join(" ")}`,
    };
  }
}

/** Runs the peer on a fresh database of `server` (dropped afterwards). */
export async function runPythonPeer(
  python: string,
  server: ServerInfo,
  o: { workflows: number; workers: number; timeoutMs: number },
): Promise<PythonPeerResult> {
  const database = `sayiir_py_${runId()}`;
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(server.url);
    url.pathname = `/${database}`;
    const args = [SCRIPT, "run", "--url", url.href, "--workflows", String(o.workflows)];
    args.push("--processes", String(o.workers), "--poll", String(SAYIIR_PY_POLL_S));
    args.push("--timeout", String(Math.round(o.timeoutMs / 1000)));
    const { stdout } = await run(python, args, { timeout: o.timeoutMs + 120_000, maxBuffer: 1 << 24 });
    const r = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as Record<string, number | string>;
    const ms = Number(r.seconds) * 1000;
    const tasks = Number(r.tasks);
    return {
      engine: `sayiir ${r.version} (PyPI, Rust core, its PostgresBackend)`,
      workers: o.workers,
      processes: Number(r.processes),
      workflows: Number(r.workflows),
      tasks,
      ms: Math.round(ms),
      stepsPerSecond: Math.round((tasks / ms) * 1000),
      workflowsPerSecond: Math.round((Number(r.workflows) / ms) * 1000),
      duplicates: Number(r.duplicates),
      extraRuns: Number(r.extraRuns),
      neverRun: Number(r.neverRun),
      notCompleted: Number(r.notCompleted),
      wrongOutput: Number(r.wrongOutput),
      settings: `one Worker per process, poll_interval ${SAYIIR_PY_POLL_S} s, claim_ttl 300 s, WorkflowClient.submit`,
    };
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end().catch(() => undefined);
  }
}
