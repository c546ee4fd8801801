// What every part of one running worker shares: the backend, its settings with their defaults,
// the compiled workflows, the counters, the stop/crash state and the event sink.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { Committer } from "./committer.ts";
import { type CompiledWorkflow, compileWorkflow } from "./definition.ts";
import type { WorkerEvent, WorkerOptions, WorkerStats } from "./events.ts";

export interface WorkerContext {
  readonly backend: PersistentBackend;
  /** The steps' commits, batched into shared completeTasks calls. */
  readonly committer: Committer;
  readonly workerId: string;
  /** Lease of every claim (ms). */
  readonly leaseMs: number;
  /** Heartbeat period (ms); 0: no heartbeats. */
  readonly heartbeatMs: number;
  /** Tasks in flight at once. */
  readonly batch: number;
  /** The queues served (undefined: the store's default). */
  readonly queues: string[] | undefined;
  /** Longest backoff after a failed claim or wait (ms). */
  readonly maxIdleMs: number;
  /** timeoutMs of one idle waitForTasks (ms). */
  readonly idleWaitMs: number;
  /** Compiled workflows by definition hash. */
  readonly compiled: ReadonlyMap<string, CompiledWorkflow>;
  readonly stats: WorkerStats;
  /** The simulated kill -9, if any. */
  readonly crash: AbortSignal | undefined;
  /** The graceful stop, if any. */
  readonly signal: AbortSignal | undefined;
  /** The crash signal fired: abandon everything at once. */
  crashed(): boolean;
  /** Stop claiming (graceful stop or crash). */
  stopping(): boolean;
  /** Reports an event (counts errors; reports nothing once crashed). */
  emit(event: WorkerEvent): void;
}

/** The context of one runWorker call, with the options' defaults filled in. */
export function workerContext(options: WorkerOptions): WorkerContext {
  const leaseMs = options.leaseMs ?? 1000;
  const compiled = new Map<string, CompiledWorkflow>();
  for (const definition of options.workflows) compiled.set(definition.hash, compileWorkflow(definition));
  const stats: WorkerStats = {
    claimed: 0,
    committed: 0,
    lost: 0,
    paused: 0,
    failed: 0,
    retried: 0,
    errors: 0,
  };
  const crashed = () => options.crash?.aborted === true;
  return {
    backend: options.backend,
    committer: new Committer(options.backend),
    workerId: options.workerId,
    leaseMs,
    heartbeatMs: options.heartbeatMs ?? Math.max(1, Math.floor(leaseMs / 3)),
    batch: options.batch ?? 4,
    queues: options.queues,
    maxIdleMs: options.maxIdleMs ?? 200,
    idleWaitMs: options.idleWaitMs ?? 30_000,
    compiled,
    stats,
    crash: options.crash,
    signal: options.signal,
    crashed,
    stopping: () => options.signal?.aborted === true || crashed(),
    emit: (event) => {
      if (event.type === "error") stats.errors++;
      if (crashed()) return;
      options.onEvent?.(event);
    },
  };
}

/** An error as one line for events: "Name: message". */
export function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

export const sleep = (ms: number): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves when `signal` aborts (at once if it has); never without a signal. Cuts waits short. */
export function whenAborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal === undefined) return;
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}
