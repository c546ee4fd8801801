// Scenario 5's consumers, the same in a worker process (wakeups-worker.ts) and, for the in-memory
// backend, in the main process: our dispatcher (one per process, as the reference worker runs:
// claim for every free slot in one call, run the claimed tasks concurrently, wait once when nothing
// was claimable) and the peers' (a BullMQ Worker, a graphile-worker runner), each recording when it
// got a task, on the machine's monotonic clock (monoMs), for the parent to subtract the save's return.
import type { PersistentBackend } from "@sayiir/persistence-core";
import type { PeerConfig } from "./peers.ts";
import { errorMessage, sleep } from "./util.ts";

/**
 * The machine's monotonic clock in ms (CLOCK_MONOTONIC, the same in every process). Not nowMs():
 * performance.timeOrigin is the wall clock at a process's start, so processes started on either side
 * of a wall-clock step (a VM's time sync) disagree by that step, seconds on this machine.
 */
export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** One task a worker got: its key (our instance id, the peer job's `i`) and when (monoMs). */
export type WakeClaim = [key: string, at: number];

export interface WakeLoop {
  /** What the workers got so far. */
  readonly claims: WakeClaim[];
  readonly errors: Record<string, number>;
  /** Stops the workers (an idle wait is aborted) and resolves once they have returned. */
  stop(): Promise<void>;
}

/** A claim's lease: long enough never to expire during a run. */
const TTL_MS = 300_000;
/** timeoutMs of one idle wait, as a long-running worker would use. */
export const WAIT_MS = 30_000;
/** Waits in a row that said "ready" while the claim then got nothing, before a short backoff. */
const MAX_EMPTY_READY = 3;
/** The pause after a failed call (or "ready" waits for nothing), so a broken store is not hammered. */
const BACKOFF_MS = 20;
const OUTPUT = new Uint8Array([1]);

type Claim = Awaited<ReturnType<PersistentBackend["claimAvailableTasks"]>>[number]["claim"];

function count(errors: Record<string, number>, op: string, error: unknown): void {
  const key = `${op}: ${errorMessage(error).slice(0, 80)}`;
  errors[key] = (errors[key] ?? 0) + 1;
}

/**
 * One dispatcher with `slots` slots on one backend instance (one listener), the shape of the
 * reference worker (tooling/worker) and of the peers' consumers (one fetch loop per process): claim
 * up to the free slots in one call, record the claim's return for every task it got and run each
 * (one `completeTasks`) concurrently; when the claim got nothing and slots are free, wait once
 * (`waitForTasks`). A task that finishes frees a slot and ends a wait in progress, as in the
 * reference worker (its commit may have made a successor ready without a notification).
 */
export function startSayiirDispatcher(backend: PersistentBackend, slots: number, workerId: string): WakeLoop {
  const stop = new AbortController();
  const stopped = new Promise<void>((resolve) => stop.signal.addEventListener("abort", () => resolve()));
  const claims: WakeClaim[] = [];
  const errors: Record<string, number> = {};
  const inFlight = new Set<Promise<void>>();
  // The wait in progress, if any: a finishing task aborts it.
  let waiting: AbortController | undefined;
  const run = (claim: Claim) => {
    const task: Promise<void> = backend
      .completeTasks([{ claim, output: OUTPUT }])
      .then(
        () => undefined,
        (error: unknown) => count(errors, "complete", error),
      )
      .finally(() => {
        inFlight.delete(task);
        waiting?.abort();
      });
    inFlight.add(task);
  };
  const idle = async (): Promise<"ready" | "other"> => {
    waiting = new AbortController();
    try {
      const signal = AbortSignal.any([stop.signal, waiting.signal]);
      return (await backend.waitForTasks({ timeoutMs: WAIT_MS, signal })) === "ready" ? "ready" : "other";
    } catch (error) {
      if (!stop.signal.aborted) {
        count(errors, "waitForTasks", error);
        await sleep(BACKOFF_MS);
      }
      return "other";
    } finally {
      waiting = undefined;
    }
  };
  const loop = async () => {
    // Waits in a row that said "ready" yet the claim found nothing (another process was faster).
    let emptyReady = 0;
    while (!stop.signal.aborted) {
      const free = slots - inFlight.size;
      if (free === 0) {
        await Promise.race([...inFlight, stopped]);
        continue;
      }
      let tasks: Awaited<ReturnType<PersistentBackend["claimAvailableTasks"]>>;
      try {
        tasks = await backend.claimAvailableTasks(workerId, free, TTL_MS);
      } catch (error) {
        count(errors, "claim", error);
        await sleep(BACKOFF_MS);
        continue;
      }
      const at = monoMs();
      for (const task of tasks) {
        claims.push([task.instanceId, at]);
        run(task.claim);
      }
      if (tasks.length > 0) emptyReady = 0;
      else if (emptyReady >= MAX_EMPTY_READY) {
        emptyReady = 0;
        await sleep(BACKOFF_MS);
      } else emptyReady = (await idle()) === "ready" ? emptyReady + 1 : 0;
    }
    await Promise.all(inFlight);
  };
  const running = loop();
  return {
    claims,
    errors,
    stop: async () => {
      stop.abort();
      await running;
    },
  };
}

/** Several dispatchers on one backend instance (the in-memory store: its "processes" share one). */
export function startSayiirDispatchers(backend: PersistentBackend, slots: readonly number[]): WakeLoop {
  const loops = slots.map((n, p) => startSayiirDispatcher(backend, n, `p${p}`));
  const claims: WakeClaim[] = [];
  const errors: Record<string, number> = {};
  return {
    get claims() {
      claims.splice(0, claims.length, ...loops.flatMap((l) => l.claims));
      return claims;
    },
    get errors() {
      for (const key of Object.keys(errors)) delete errors[key];
      for (const l of loops) for (const [k, v] of Object.entries(l.errors)) errors[k] = (errors[k] ?? 0) + v;
      return errors;
    },
    stop: async () => void (await Promise.all(loops.map((l) => l.stop()))),
  };
}

/**
 * A peer's consumer with `concurrency` concurrent jobs, started at once: each handler records its
 * start. BullMQ: one `Worker` (a blocking BZPOPMIN while idle). graphile-worker: `run()` (LISTEN/
 * NOTIFY, its default 2 s poll besides).
 */
export async function startPeerWakeLoop(config: PeerConfig, concurrency: number): Promise<WakeLoop> {
  const claims: WakeClaim[] = [];
  const errors: Record<string, number> = {};
  const record = (data: unknown) => claims.push([String((data as { i: number }).i), monoMs()]);
  if (config.peer === "bullmq") {
    const { Worker } = await import("bullmq");
    const { Redis } = await import("ioredis");
    const connection = new Redis(config.url, { maxRetriesPerRequest: null });
    const worker = new Worker(config.name, async (job) => void record(job.data), { connection, concurrency });
    worker.on("error", (error) => count(errors, "bullmq", error));
    await worker.waitUntilReady();
    return {
      claims,
      errors,
      stop: async () => {
        await worker.close(true);
        connection.disconnect();
      },
    };
  }
  if (config.peer === "graphile-worker") {
    const mod = await import("graphile-worker");
    const pg = (await import("pg")).default;
    const pool = new pg.Pool({ connectionString: config.url, max: concurrency + 2 });
    pool.on("error", (error) => count(errors, "pool", error));
    pool.on("connect", (client) => client.on("error", (error) => count(errors, "pool client", error)));
    const runner = await mod.run({
      pgPool: pool,
      schema: config.schema,
      concurrency,
      noHandleSignals: true,
      logger: new mod.Logger(() => (level: string, message: string) => {
        if (level === "error") count(errors, "graphile-worker", message);
      }),
      taskList: { noop: async (payload) => void record(payload) },
    });
    return {
      claims,
      errors,
      stop: async () => {
        await runner.stop();
        await pool.end();
      },
    };
  }
  throw new Error(`scenario 5 has no consumer for ${config.peer}`);
}
