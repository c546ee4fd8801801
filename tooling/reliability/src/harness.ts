// Shared helpers of the reliability tests: a subject per test with its teardown, and a
// fingerprint of a whole store to prove that "nothing else changed".

import {
  type BackendName,
  BackendUnavailable,
  type ClientOptions,
  type CreateOptions,
  type Subject,
} from "@sayiir/backends";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { isPersistenceError } from "@sayiir/persistence-core";
import { comparable } from "@sayiir/persistence-core/conformance";
import { BACKENDS } from "./registry.ts";
import { injectedUrls } from "./servers.ts";

interface SkipContext {
  skip: (note?: string) => void;
}

/** Builds an isolated subject or skips the test with the reason printed (never silently). */
export async function subjectOrSkip(
  suite: string,
  name: BackendName,
  ctx: SkipContext,
  options: CreateOptions = {},
): Promise<Subject> {
  try {
    return await BACKENDS[name].create(injectedUrls(), options);
  } catch (error) {
    if (error instanceof BackendUnavailable) {
      console.warn(`[reliability] ${suite}: SKIPPED backend ${name}: ${error.message}`);
      ctx.skip(error.message);
    }
    throw error;
  }
}

/** Runs `body` with a fresh subject; closes every client and drops the storage afterwards. */
export async function withSubject<T>(
  suite: string,
  name: BackendName,
  ctx: SkipContext,
  options: CreateOptions,
  body: (subject: Subject, open: (o?: ClientOptions) => Promise<PersistentBackend>) => Promise<T>,
): Promise<T> {
  const subject = await subjectOrSkip(suite, name, ctx, options);
  const opened: PersistentBackend[] = [subject.backend];
  try {
    return await body(subject, async (o) => {
      const b = await subject.connect(o);
      opened.push(b);
      return b;
    });
  } finally {
    // Bounded: a backend stuck behind a blackhole must not hang the teardown.
    const bounded = (p: Promise<unknown>) =>
      Promise.race([p.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
    await Promise.all(opened.map((b) => bounded(b.close())));
    await bounded(subject.cleanup());
  }
}

/** Everything observable about a set of instances and claims, in a comparable form. */
export async function fingerprint(
  backend: PersistentBackend,
  claimed: Array<[string, string]> = [],
): Promise<unknown> {
  const ids = (await backend.listSnapshots()).sort();
  const snapshots: unknown[] = [];
  for (const id of ids) {
    try {
      snapshots.push(comparable(await backend.loadSnapshot(id)));
    } catch (error) {
      snapshots.push({ id, error: isPersistenceError(error) ? error.code : String(error) });
    }
  }
  const ready = (await backend.findAvailableTasks("fingerprint", 1000)).map((t) => [
    t.instanceId,
    t.taskId,
    Array.from(t.input),
    t.workflowDefinitionHash,
  ]);
  // A held claim stays held: a probe claim on it gets null.
  const held: unknown[] = [];
  for (const [i, t] of claimed)
    held.push([i, t, (await backend.claimTask(i, t, "fingerprint-probe", 1)) === null]);
  return { ids, snapshots, ready, held };
}

/** The error's code, or a marker for anything that is not a typed PersistenceError. */
export async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    if (isPersistenceError(error)) return error.code;
    return `UNTYPED ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`;
  }
}

/**
 * Times a promise that must settle; returns its outcome and how long it took. Past `deadlineMs`
 * it gives up waiting and reports "HUNG" (the promise may still settle later).
 */
export async function timed(
  promise: Promise<unknown>,
  deadlineMs = 60_000,
): Promise<{ result: string; ms: number }> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve("HUNG"), deadlineMs);
  });
  const result = await Promise.race([outcome(promise), hung]);
  clearTimeout(timer);
  return { result, ms: Math.round(performance.now() - started) };
}
