// Every wait in this package is a poll with a deadline: nothing may hang forever.
import { setTimeout as sleep } from "node:timers/promises";
import { errorMessage } from "./log.ts";

export interface PollOptions {
  /** What we are waiting for, used in the timeout error. */
  what: string;
  timeoutMs: number;
  intervalMs?: number;
  /** Checked before each attempt; a string aborts the wait at once with that reason (e.g. the process died). */
  abortIf?: () => string | undefined;
}

/**
 * Calls `attempt` until it returns a value other than `undefined`, or throws once the deadline has passed.
 * An exception from `attempt` counts as "not yet"; the last one is quoted in the timeout error.
 */
export async function pollUntil<T>(attempt: () => Promise<T | undefined>, options: PollOptions): Promise<T> {
  const deadline = performance.now() + options.timeoutMs;
  const interval = options.intervalMs ?? 50;
  let lastError = "";
  for (;;) {
    const abort = options.abortIf?.();
    if (abort) throw new Error(`${options.what}: ${abort}`);
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = errorMessage(error);
    }
    if (performance.now() >= deadline) {
      throw new Error(
        `timed out after ${options.timeoutMs} ms waiting for ${options.what}` +
          (lastError ? ` (last error: ${lastError})` : ""),
      );
    }
    await sleep(interval);
  }
}

/** Rejects with a clear message if `promise` does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
