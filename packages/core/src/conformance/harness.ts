import { randomUUID } from "node:crypto";
import { expect, onTestFinished } from "vitest";
import type { PersistentBackend } from "../backend.js";
import type { TaskClaim } from "../claims.js";
import type { ErrorCode } from "../errors.js";
import type { ConformanceOptions, ConformanceSubject, SubjectOptions } from "./types.js";

/** The subject of one test; every client opened through `connect` is closed when the test ends. */
export type TestContext = ConformanceSubject;

/**
 * Sets up an isolated subject for the current test and registers its teardown, so every
 * test stands alone and can run by itself in any order.
 */
export async function useSubject(
  options: ConformanceOptions,
  subjectOptions: SubjectOptions = {},
): Promise<TestContext> {
  const subject = await options.setup(subjectOptions);
  const opened: PersistentBackend[] = [subject.backend];
  onTestFinished(async () => {
    await Promise.allSettled(opened.map((b) => b.close()));
    await subject.cleanup?.();
  });
  return {
    ...subject,
    connect: async () => {
      const b = await subject.connect();
      opened.push(b);
      return b;
    },
  };
}

/** A unique id with a readable prefix, so tests never share keys even on shared storage. */
export function uid(prefix = "wf"): string {
  return `${prefix}-${randomUUID()}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until `check` returns a value other than undefined, or fails after the deadline. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 10;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(delay);
    delay = Math.min(delay * 2, 100);
  }
}

/**
 * Reads, and asserts on the answer only if it came back before `until` (a runAt, a timeout, a
 * claim's expiry, all judged by a clock on this machine). What must hold until then may rightly
 * stop holding after it, so an answer that came later (a loaded machine) proves nothing either way
 * and is not judged; any answer before `until` is. Returns whether it was judged.
 */
export async function beforeDeadline<T>(
  until: number,
  read: () => Promise<T>,
  assert: (value: T) => void,
): Promise<boolean> {
  const value = await read();
  if (Date.now() >= until) return false;
  assert(value);
  return true;
}

/** Bytes 0..255 in order: catches any encoding that is not byte-exact. */
export function allByteValues(): Uint8Array {
  return Uint8Array.from({ length: 256 }, (_, i) => i);
}

/** Deterministic pseudo-random bytes (xorshift), cheap for multi-MiB payloads. */
export function patternBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, Math.floor(length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

export const text = (value: string): Uint8Array => new TextEncoder().encode(value);

/** Awaits a promise expected to reject and returns the error for assertions. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the operation to fail, but it succeeded");
}

/** Claims a task that the test expects to be free, failing the test if it is not. */
export async function claimOrFail(
  backend: Pick<PersistentBackend, "claimTask">,
  instanceId: string,
  taskId: string,
  workerId: string,
  ttlMs: number | null = 30_000,
): Promise<TaskClaim> {
  const claim = await backend.claimTask(instanceId, taskId, workerId, ttlMs);
  if (claim === null) throw new Error(`claim of ${taskId} on ${instanceId} by ${workerId} failed`);
  return claim;
}

/** Awaits an operation expected to fail and asserts its stable error code; returns the error. */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  const error = await rejection(promise);
  expect(error).toMatchObject({ code });
  return error as Error;
}

/**
 * How far the backend's expiry judgement may lag the test's clock, in ms: its declared skew
 * budget, and at least 250 ms for scheduling and round trips.
 */
export function expirySlackMs(backend: PersistentBackend): number {
  return Math.max(250, backend.capabilities.clockSkewMs);
}
