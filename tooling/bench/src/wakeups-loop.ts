// Scenario 5's consumers, the same in a worker process (wakeups-worker.ts) and, for the in-memory
// backend, in the main process: our idle workers (claim-next with limit 1, then waitForTasks when
// nothing was claimable) and the peers' (a BullMQ Worker, a graphile-worker runner), each recording
// when it got a task, on the machine's monotonic clock (monoMs), for the parent to subtract the save's return.
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
const OUTPUT = new Uint8Array([1]);

function count(errors: Record<string, number>, op: string, error: unknown): void {
  const key = `${op}: ${errorMessage(error).slice(0, 80)}`;
  errors[key] = (errors[key] ?? 0) + 1;
}

/**
 * `workers` loops on one backend instance (one listener shared, as in a worker process): claim one
 * task; got one: record the claim's return time, complete it, claim again; got none: wait.
 */
export function startSayiirWakeLoop(backend: PersistentBackend, workers: number, prefix: string): WakeLoop {
  const stop = new AbortController();
  const claims: WakeClaim[] = [];
  const errors: Record<string, number> = {};
  const worker = async (workerId: string) => {
    while (!stop.signal.aborted) {
      let tasks: Awaited<ReturnType<PersistentBackend["claimAvailableTasks"]>>;
      try {
        tasks = await backend.claimAvailableTasks(workerId, 1, TTL_MS);
      } catch (error) {
        count(errors, "claim", error);
        await sleep(20);
        continue;
      }
      const at = monoMs();
      if (tasks.length > 0) {
        for (const task of tasks) claims.push([task.instanceId, at]);
        await backend
          .completeTasks(tasks.map(({ claim }) => ({ claim, output: OUTPUT })))
          .catch((error: unknown) => count(errors, "complete", error));
        continue;
      }
      try {
        await backend.waitForTasks({ timeoutMs: WAIT_MS, signal: stop.signal });
      } catch (error) {
        if (stop.signal.aborted) break;
        count(errors, "waitForTasks", error);
        await sleep(20);
      }
    }
  };
  const runs = Array.from({ length: workers }, (_, k) => worker(`${prefix}-${k}`));
  return {
    claims,
    errors,
    stop: async () => {
      stop.abort();
      await Promise.all(runs);
    },
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
