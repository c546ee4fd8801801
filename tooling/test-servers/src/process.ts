// Child processes and temp dirs of local servers, and the guarantees around them:
// - every server runs in its own process group (detached), so stopping it kills its children too
//   (Postgres backends, the JVM's helpers);
// - everything started (server process groups, short commands like initdb, temp dirs) is listed in a
//   small registry file; one shell watchdog per Node process waits for this process to disappear
//   without teardown (SIGKILL, crash) and then kills what the file lists and removes the dirs, so no
//   server outlives the test run;
// - on exit / SIGINT / SIGTERM / SIGHUP everything still registered is killed synchronously.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import {
  accessSync,
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pollUntil } from "./wait.ts";

export interface StartOptions {
  /** Short name for messages, e.g. "redis-server :21345". */
  name: string;
  command: string;
  args: string[];
  /** The server's throw-away dir (made with makeTempDir, or inside one); log: `<dir>/server.log`. */
  dir: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run as this user (Postgres refuses to run as root). */
  user?: UnixUser;
}

export interface ManagedProcess {
  name: string;
  pid: number;
  dir: string;
  logFile: string;
  child: ChildProcess;
  /** Set once the process has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  exited: Promise<void>;
  /** Set when the command could not be spawned at all (ENOENT, EACCES). */
  spawnError: Error | undefined;
}

export interface UnixUser {
  name: string;
  uid: number;
  gid: number;
}

const live = new Set<ManagedProcess>();
const tempDirs = new Set<string>();
/** Short-lived commands (initdb, redis-cli, javac) still running. */
const commands = new Set<ChildProcess>();
/** Set by a signal: nothing new may start once we are cleaning up. */
let shuttingDown = false;

function refuseIfShuttingDown(what: string): void {
  if (shuttingDown) throw new Error(`not starting ${what}: the test process is shutting down`);
}

/** A fresh directory under the OS temp dir, removed at teardown (or by the watchdog / exit hook). */
export function makeTempDir(prefix: string): string {
  installExitHooks();
  refuseIfShuttingDown(`a ${prefix} server`);
  const dir = mkdtempSync(join(tmpdir(), `sayiir-${prefix}-`));
  tempDirs.add(dir);
  syncRegistry();
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
  tempDirs.delete(dir);
  syncRegistry();
}

export function startProcess(options: StartOptions): ManagedProcess {
  installExitHooks();
  refuseIfShuttingDown(options.name);
  const logFile = join(options.dir, "server.log");
  const fd = openSync(logFile, "a");
  let child: ChildProcess;
  try {
    child = spawn(options.command, options.args, {
      cwd: options.cwd ?? options.dir,
      env: options.env ?? process.env,
      // Own process group, output to a file: no pipes that could fill up or keep Node alive.
      detached: true,
      stdio: ["ignore", fd, fd],
      ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
    });
  } finally {
    closeSync(fd);
  }
  child.unref();
  const managed: ManagedProcess = {
    name: options.name,
    pid: child.pid ?? -1,
    dir: options.dir,
    logFile,
    child,
    exit: undefined,
    exited: new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        managed.exit = { code, signal };
        resolve();
      });
      child.once("error", (error) => {
        managed.exit = { code: null, signal: null };
        managed.spawnError = error;
        live.delete(managed);
        syncRegistry();
        resolve();
      });
    }),
    spawnError: undefined,
  };
  if (child.pid !== undefined) {
    // Stays registered until stopProcess, even if the leader exits: its group may live on.
    live.add(managed);
    syncRegistry();
  }
  return managed;
}

// ---------------------------------------------------------------------------------------------
// Registry + watchdog

/** Unique per module instance, in case a bundler loads this module twice in one process. */
const registryFile = join(tmpdir(), `sayiir-test-servers-${process.pid}-${randomUUID().slice(0, 8)}.reap`);
let watchdogPid: number | undefined;

/**
 * Kept in `registryFile`, one entry per line: `g <pgid>` (a server's process group), `p <pid>`
 * (a short command), `d <dir>` (a temp dir). Rewritten on every change, so the watchdog never
 * kills a group or pid that we already stopped (and the OS may have reused).
 */
function syncRegistry(): void {
  const lines = [
    ...[...live].map((p) => `g ${p.pid}`),
    ...[...commands].flatMap((c) => (c.pid === undefined ? [] : [`p ${c.pid}`])),
    ...[...tempDirs].map((d) => `d ${d}`),
  ];
  if (lines.length === 0) {
    if (watchdogPid !== undefined) killPid(watchdogPid, "SIGKILL");
    watchdogPid = undefined;
    rmSync(registryFile, { force: true });
    return;
  }
  writeFileSync(registryFile, `${lines.join("\n")}\n`);
  watchdogPid ??= startWatchdog();
}

/**
 * Waits (polling once a second) for this Node process to disappear, then kills and removes what the
 * registry lists. (No `--` before a negative pid: dash's kill builtin rejects it.)
 */
function startWatchdog(): number | undefined {
  const script = [
    'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
    '[ -f "$2" ] || exit 0',
    "while read -r kind value; do",
    '  case "$kind" in g) kill -KILL "-$value" 2>/dev/null;; p) kill -KILL "$value" 2>/dev/null;; esac',
    'done < "$2"',
    "sleep 0.2",
    'while read -r kind value; do if [ "$kind" = d ]; then rm -rf -- "$value"; fi; done < "$2"',
    'rm -f -- "$2"',
  ].join("\n");
  const watchdog = spawn(
    "/bin/sh",
    ["-c", script, "sayiir-test-servers-watchdog", String(process.pid), registryFile],
    {
      detached: true,
      stdio: "ignore",
    },
  );
  watchdog.on("error", () => {});
  watchdog.unref();
  return watchdog.pid;
}

/** Describes why a process is no longer usable, or undefined while it runs. */
export function deathReason(p: ManagedProcess): string | undefined {
  if (p.spawnError) return `${p.name} could not be started: ${p.spawnError.message}`;
  if (!p.exit) return undefined;
  const how = p.exit.signal ? `signal ${p.exit.signal}` : `code ${p.exit.code}`;
  return `${p.name} exited with ${how}; log tail:\n${logTail(p)}`;
}

export function logTail(p: ManagedProcess, lines = 25): string {
  try {
    return readFileSync(p.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Waits for a line matching `pattern` in the process's log; fails fast if the process exits. */
export async function waitForLog(p: ManagedProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  try {
    return await pollUntil(
      async () => {
        const text = await readFile(p.logFile, "utf8");
        return pattern.exec(text)?.[0];
      },
      { what: `${p.name} to print ${pattern}`, timeoutMs, intervalMs: 25, abortIf: () => deathReason(p) },
    );
  } catch (error) {
    if (deathReason(p)) throw error;
    throw new Error(`${(error as Error).message}\nlog tail:\n${logTail(p)}`);
  }
}

/**
 * Stops a server: `signal` to its whole process group, SIGKILL after `graceMs`, then waits for the exit.
 * Never throws for an already-dead process.
 */
export async function stopProcess(
  p: ManagedProcess,
  signal: NodeJS.Signals = "SIGTERM",
  graceMs = 3000,
): Promise<void> {
  killGroup(p.pid, signal);
  const timer = sleep(graceMs).then(() => "timeout" as const);
  if ((await Promise.race([p.exited.then(() => "exited" as const), timer])) === "timeout") {
    killGroup(p.pid, "SIGKILL");
    await Promise.race([p.exited, sleep(2000)]);
  }
  // The group may still hold children of a leader that exited first (e.g. postgres backends).
  killGroup(p.pid, "SIGKILL");
  live.delete(p);
  syncRegistry();
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  if (pgid > 0) killPid(-pgid, signal);
}

function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: already gone.
  }
}

let hooksInstalled = false;

/** Last-resort cleanup, synchronous because `exit` handlers cannot await. */
function emergencyCleanup(): void {
  for (const c of commands) if (c.pid !== undefined) killPid(c.pid, "SIGKILL");
  commands.clear();
  for (const p of live) killGroup(p.pid, "SIGKILL");
  live.clear();
  for (const dir of tempDirs) {
    try {
      // Retries cover a just-killed process still deleting its own files (ENOTEMPTY).
      rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
    } catch {
      // best effort: the watchdog of each server removes its dir as well
    }
  }
  tempDirs.clear();
  if (watchdogPid !== undefined) killPid(watchdogPid, "SIGKILL");
  rmSync(registryFile, { force: true });
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", emergencyCleanup);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      shuttingDown = true;
      emergencyCleanup();
      process.off(signal, onSignal);
      // Only re-raise when nobody else (e.g. vitest) handles the signal, to keep the default exit.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion with a hard timeout; rejects with its output on failure. */
export function run(
  command: string,
  args: string[],
  options: {
    timeoutMs: number;
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    user?: UnixUser;
    /** Do not SIGKILL it when this process is interrupted (apt-get: never kill dpkg mid-way). */
    untracked?: boolean;
  },
): Promise<RunResult> {
  installExitHooks();
  refuseIfShuttingDown(command);
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      {
        timeout: options.timeoutMs,
        killSignal: "SIGKILL",
        maxBuffer: 32 * 1024 * 1024,
        env: options.env ?? process.env,
        cwd: options.cwd,
        ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
      },
      (error, stdout, stderr) => {
        if (commands.delete(child)) syncRegistry();
        if (error) {
          const output = `${stdout}${stderr}`.trim().split("\n").slice(-30).join("\n");
          const why = error.killed ? `killed after ${options.timeoutMs} ms` : error.message.split("\n")[0];
          reject(new Error(`\`${command} ${args.join(" ")}\` failed: ${why}${output ? `\n${output}` : ""}`));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
    if (!options.untracked) {
      commands.add(child);
      syncRegistry();
    }
  });
}

/** The first executable named `name` on PATH or in `extraDirs`, or undefined. */
export function findExecutable(name: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), ...extraDirs].filter(Boolean);
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The user to run servers as that refuse root (Postgres): `nobody` when we are root, else ourselves
 * (undefined = no switch).
 */
export function unprivilegedUser(): UnixUser | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  const name = process.env.SAYIIR_TEST_UNPRIVILEGED_USER ?? "nobody";
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${name}:`));
  const fields = line?.split(":");
  if (!fields || fields.length < 4)
    throw new Error(`user ${name} not found in /etc/passwd (needed to run Postgres as non-root)`);
  return { name, uid: Number(fields[2]), gid: Number(fields[3]) };
}
