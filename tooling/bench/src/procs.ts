// Parent side of the worker processes: fork, wait until every process is connected and idle, start
// them all at once, and collect what they did.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { StoreConfig } from "@sayiir/backends";
import type { PeerConfig, PeerSettings } from "./peers.ts";
import type { SayiirLoopOptions, SayiirLoopResult } from "./sayiir-workers.ts";
import type { StepsLoopOptions, StepsLoopResult } from "./steps-workers.ts";
import { nowMs, sleep } from "./util.ts";

export type WorkerJob =
  | { kind: "sayiir"; store: StoreConfig; loop: SayiirLoopOptions; poolSize: number }
  | { kind: "peer"; config: PeerConfig; settings: PeerSettings }
  | { kind: "steps"; store: StoreConfig; loop: StepsLoopOptions; poolSize: number };

/**
 * `roundTrips`: statements / requests this process sent while timed (undefined: not counted);
 * `cpuMs`: CPU time this process used while timed.
 */
export type WorkerOutcome =
  | { kind: "sayiir"; result: SayiirLoopResult; roundTrips?: number; cpuMs: number }
  | { kind: "peer"; seen: number[]; roundTrips?: number; cpuMs: number }
  | { kind: "steps"; result: StepsLoopResult; roundTrips?: number; cpuMs: number };

export type ParentMessage = { type: "init"; job: WorkerJob } | { type: "go" } | { type: "stop" };
export type ChildMessage =
  | { type: "ready" }
  | { type: "done"; result: WorkerOutcome }
  | { type: "error"; message: string; stack: string };

const WORKER_SCRIPT = fileURLToPath(new URL("./worker.ts", import.meta.url));

interface Child {
  proc: ChildProcess;
  ready: Promise<void>;
  done: Promise<WorkerOutcome>;
}

function spawnChild(job: WorkerJob): Child {
  const proc = fork(WORKER_SCRIPT, [], {
    serialization: "advanced",
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    execArgv: ["--disable-warning=ExperimentalWarning"],
  });
  let onReady: () => void = () => {};
  let onFail: (e: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    onFail = reject;
  });
  const done = new Promise<WorkerOutcome>((resolve, reject) => {
    proc.on("message", (m: ChildMessage) => {
      if (m.type === "ready") onReady();
      else if (m.type === "done") resolve(m.result);
      else if (m.type === "error") {
        const error = new Error(`worker process ${proc.pid}: ${m.message}\n${m.stack}`);
        onFail(error);
        reject(error);
      }
    });
    proc.on("exit", (code, signal) => {
      const error = new Error(`worker process ${proc.pid} exited (${signal ?? code}) before reporting`);
      onFail(error);
      reject(error);
    });
  });
  // Avoid unhandled rejections; callers await both.
  ready.catch(() => {});
  done.catch(() => {});
  proc.send({ type: "init", job } satisfies ParentMessage);
  return { proc, ready, done };
}

export interface ProcessRun {
  startedAt: number;
  /** When the last task finished: the last worker's end (Sayiir) or the first poll seeing an empty queue (peers, steps). */
  endedAt: number;
  outcomes: WorkerOutcome[];
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs the jobs in one process each. For peers and scenario 6, `remaining` is polled every few ms
 * after the start and the processes are stopped once it reaches 0.
 */
export async function runProcesses(
  jobs: WorkerJob[],
  timeoutMs: number,
  remaining?: () => Promise<number>,
  beforeGo?: () => Promise<void>,
): Promise<ProcessRun> {
  const children = jobs.map(spawnChild);
  try {
    await withTimeout(Promise.all(children.map((c) => c.ready)), 60_000, "worker start-up");
    await beforeGo?.();
    const startedAt = nowMs();
    for (const c of children) c.proc.send({ type: "go" } satisfies ParentMessage);
    let endedAt: number;
    let outcomes: WorkerOutcome[];
    if (remaining) {
      const deadline = Date.now() + timeoutMs;
      // A failed child must end the wait too.
      let failure: unknown;
      for (const c of children) c.done.catch((e: unknown) => (failure ??= e));
      while (true) {
        if (failure) throw failure;
        if ((await remaining()) === 0) break;
        if (Date.now() > deadline) throw new Error(`queue not drained within ${timeoutMs} ms`);
        await sleep(10);
      }
      endedAt = nowMs();
      for (const c of children) c.proc.send({ type: "stop" } satisfies ParentMessage);
      outcomes = await withTimeout(Promise.all(children.map((c) => c.done)), 60_000, "worker stop");
    } else {
      outcomes = await withTimeout(Promise.all(children.map((c) => c.done)), timeoutMs, "the workers");
      endedAt = Math.max(...outcomes.map((o) => (o.kind === "sayiir" ? o.result.endedAt : 0)));
    }
    return { startedAt, endedAt, outcomes };
  } finally {
    for (const c of children)
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  }
}
