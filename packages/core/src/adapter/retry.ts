import { BackendError } from "../errors.js";

/** What an attempt returns to ask for another one: it lost a race and should re-read. */
export const RETRY: unique symbol = Symbol("retry");
export type Retry = typeof RETRY;

export interface RaceRetryOptions {
  /** Attempts before giving up with a BackendError (default 50). */
  attempts?: number;
  /** Backoff base in ms (default 2). */
  baseMs?: number;
  /** Backoff cap in ms (default 100). */
  capMs?: number;
}

export const DEFAULT_RACE_ATTEMPTS = 50;

/** Full-jitter exponential backoff: a random delay in 0..min(cap, base * 2^attempt) ms. */
export function backoffDelay(attempt: number, baseMs = 2, capMs = 100): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs an optimistic step (read, then a conditional write) until it does not lose a race: the
 * attempt returns RETRY when another writer changed the record between its read and its write.
 * The first retry runs at once; later ones back off with full jitter, so racers spread out.
 * After `attempts` lost races it gives up with a BackendError that says so (only under extreme
 * contention). Any error thrown by an attempt ends the loop unchanged.
 */
export async function retryOnRace<T>(
  what: string,
  attempt: (n: number) => Promise<T | Retry>,
  options: RaceRetryOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? DEFAULT_RACE_ATTEMPTS;
  for (let n = 0; n < attempts; n++) {
    if (n > 1) await sleep(backoffDelay(n - 1, options.baseMs, options.capMs));
    const result = await attempt(n);
    if (result !== RETRY) return result as T;
  }
  throw new BackendError(
    `${what} kept changing under concurrent writers; gave up after ${attempts} attempts`,
  );
}
