/*
 * Attempts per task and schedules, as stored in the instance document (`at`, `sc`): conversion
 * from and to core's types, the attempt a task is handed out with, a takeover of an expired
 * claim, and the pure plan of one instance's failTasks commit.
 */
import type { CompletionOutcome, TaskAttempts } from "@sayiir/persistence-core";
import { resultRefusal, type StoredSnapshot } from "@sayiir/persistence-core/adapter";
import { claimOn, isLive, runnableTask, writeView } from "./instance.js";
import type { AttemptEntry, InstanceDoc, ScheduleEntry } from "./layout.js";
import { isStale } from "./maintenance.js";

export const DEFAULT_PRIORITY = 3;
export const DEFAULT_QUEUE = "default";

/** The stored schedule of a snapshot, or undefined for the defaults (then `sc` is removed). */
export function scheduleEntry(schedule: StoredSnapshot["schedule"]): ScheduleEntry | undefined {
  const { runAt, priority, queue } = schedule;
  if (runAt === null && priority === DEFAULT_PRIORITY && queue === DEFAULT_QUEUE) return undefined;
  return { r: runAt, p: priority, n: queue };
}

/** The schedule of a document (defaults filled in). */
export function scheduleOf(doc: Pick<InstanceDoc, "sc">): {
  runAt: number | null;
  priority: number;
  queue: string;
} {
  const sc = doc.sc;
  return {
    runAt: sc?.r === null || sc?.r === undefined ? null : Number(sc.r),
    priority: sc?.p === undefined ? DEFAULT_PRIORITY : Number(sc.p),
    queue: sc?.n ?? DEFAULT_QUEUE,
  };
}

/** The stored attempts of a snapshot (toStoredSnapshot's `attempts`). */
export function attemptEntries(attempts: StoredSnapshot["attempts"]): AttemptEntry[] {
  return attempts.map(({ taskId, count, lastError, lastFailedAt, retryAt }) => {
    const entry: AttemptEntry = { t: taskId, n: count, m: lastError, a: lastFailedAt };
    if (retryAt !== undefined) entry.y = retryAt;
    return entry;
  });
}

/** The attempts of a document as fromStoredParts takes them (undefined: none recorded). */
export function storedAttempts(
  doc: Pick<InstanceDoc, "at">,
): Array<{ taskId: string } & TaskAttempts> | undefined {
  const entries = Array.isArray(doc.at) ? doc.at : [];
  if (entries.length === 0) return undefined;
  return entries.map((e) => {
    const a: { taskId: string } & TaskAttempts = {
      taskId: e.t,
      count: Number(e.n),
      lastError: e.m ?? null,
      lastFailedAt: e.a === null || e.a === undefined ? null : Number(e.a),
    };
    if (e.y !== undefined) a.retryAt = e.y === null ? null : Number(e.y);
    return a;
  });
}

/** The attempts entry of a task, if any. */
export const attemptsOn = (doc: Pick<InstanceDoc, "at">, taskId: string): AttemptEntry | undefined =>
  (doc.at ?? []).find((e) => e.t === taskId);

/** The attempts with the entry of `taskId` replaced. */
function withAttempts(doc: Pick<InstanceDoc, "at">, entry: AttemptEntry): AttemptEntry[] {
  return [...(doc.at ?? []).filter((e) => e.t !== entry.t), entry];
}

/**
 * The attempts after a claim on `taskId` at `now` over this document: when it takes over an
 * expired claim on the runnable task of a snapshot, count + 1 (lastError, lastFailedAt and
 * retryAt stay); undefined: no change.
 */
export function takeoverAttempts(
  doc: InstanceDoc | null,
  taskId: string,
  now: number,
): AttemptEntry[] | undefined {
  if (doc === null || typeof doc.d !== "string" || runnableTask(doc) !== taskId) return undefined;
  const previous = claimOn(doc, taskId);
  if (previous === undefined || isLive(previous, now)) return undefined;
  const current = attemptsOn(doc, taskId);
  return withAttempts(doc, {
    ...(current ?? { t: taskId, m: null, a: null }),
    n: Number(current?.n ?? 0) + 1,
  });
}

/** The attempt a task is handed out with: its count + 1 (claim-next reads it after its claim). */
export const attemptOf = (doc: InstanceDoc, taskId: string): number =>
  Number(attemptsOn(doc, taskId)?.n ?? 0) + 1;

/** One failure of a failTasks batch. */
export interface Failing {
  taskId: string;
  workerId: string;
  token: number;
  error: string;
  retryAt: number | null;
}

/** What one compare-and-set of an instance document does for the failures of its tasks. */
export interface FailurePlan {
  outcomes: CompletionOutcome[];
  /** The changes of the commit; undefined when every failure is refused. */
  changes: Partial<InstanceDoc> | undefined;
}

/**
 * Judges each failure on this version of the document like a completion (NotFound, ClaimLost,
 * Conflict) and folds the accepted ones into one set of changes: their attempts count + 1 with
 * the error, `now` and retryAt; their claims out (with stale claims of other tasks). The header,
 * the results and updatedAt stay.
 */
export function failurePlan(
  instanceId: string,
  doc: InstanceDoc | null,
  items: readonly Failing[],
  now: number,
): FailurePlan {
  const outcomes = items.map(
    (item): CompletionOutcome => resultRefusal(instanceId, item, writeView(doc, item, now)),
  );
  const accepted = items.filter((_, i) => outcomes[i] === null);
  if (doc === null || accepted.length === 0) return { outcomes, changes: undefined };
  let at = doc.at ?? [];
  for (const item of accepted) {
    const previous = at.find((e) => e.t === item.taskId);
    at = withAttempts(
      { at },
      { t: item.taskId, n: Number(previous?.n ?? 0) + 1, m: item.error, a: now, y: item.retryAt },
    );
  }
  const done = new Set(accepted.map((item) => item.taskId));
  return {
    outcomes,
    changes: { at, c: (doc.c ?? []).filter((e) => !done.has(e.t) && !isStale(e, now)) },
  };
}
