// What an idle worker does between claims: wait on the store (`waitForTasks`) until a task of its
// queues may be ready, one of its own tasks finishes, or it is stopped; back off after a failure.
import type { WakeReason } from "@sayiir/persistence-core";
import { errorText, sleep, type WorkerContext } from "./context.ts";

/** The first backoff after a failed claim or wait (ms); it doubles up to maxIdleMs. */
export const FIRST_BACKOFF_MS = 5;

/** "ready" answers in a row followed by an empty claim before the loop backs off instead. */
export const MAX_EMPTY_READY = 3;

/**
 * Waits while nothing was claimable: resolves when `waitForTasks` ends (a task of the worker's
 * queues may be ready, or its timeout passed), when one of `inFlight` settles (its successor may
 * be ready now, and waitForTasks would not say so if this worker's own commit made it so on a
 * poll backend) or when `halt` resolves (stop or crash: the wait is aborted, so stopping an idle
 * worker is immediate). Resolves with the wait's reason ("aborted" when something else ended it),
 * or undefined if the wait failed (reported as an error event).
 */
export async function waitIdle(
  worker: WorkerContext,
  inFlight: ReadonlySet<Promise<void>>,
  halt: Promise<void>,
): Promise<WakeReason | undefined> {
  const done = new AbortController();
  const signals = [done.signal, worker.signal, worker.crash].filter((s): s is AbortSignal => s !== undefined);
  const waited = worker.backend
    .waitForTasks({
      ...(worker.queues === undefined ? {} : { queues: worker.queues }),
      timeoutMs: worker.idleWaitMs,
      signal: AbortSignal.any(signals),
    })
    .catch((error: unknown) => {
      // A wait cut short by our own abort cannot fail the loop: only report a live failure.
      if (done.signal.aborted || worker.stopping()) return "aborted" as const;
      worker.emit({ type: "error", workerId: worker.workerId, error: `waitForTasks: ${errorText(error)}` });
      return undefined;
    });
  const ended = () => "aborted" as const;
  try {
    return await Promise.race([waited, halt.then(ended), ...[...inFlight].map((run) => run.then(ended))]);
  } finally {
    // Ends the wait if something else won the race; it settles in the background (never rejects).
    done.abort();
  }
}

/** The backoff after a failure: the first of `ms`, a task in flight settling, or `halt`. */
export async function backOff(
  ms: number,
  inFlight: ReadonlySet<Promise<void>>,
  halt: Promise<void>,
): Promise<void> {
  await Promise.race([sleep(ms), halt, ...inFlight]);
}
