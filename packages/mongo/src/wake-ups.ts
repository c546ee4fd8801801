/*
 * waitForTasks' probe: the look the hub takes on entry, after a change stream's notification
 * (change-stream.ts), at a due time and every wakeBoundMs, or, where the server runs no change
 * streams, on its adaptive poll (see the README, "Wake-ups"). Per queue the probe first asks, from the two indexes claim-next walks and without reading any document
 * body (projection: _id, limit 1), whether a task is claimable now:
 *   - the ready index (qn, qa, qi, qe): an entry whose claim expiry qe is null or has passed;
 *   - the timer index (tn, tp, ta, ti, te): an entry due (ta <= now) under no live claim.
 * Only when none is, it asks for the earliest moment one comes due by time alone, each the first
 * entry of one index range:
 *   - the earliest future due time ta (runAt, retryAt, a wait's timeout): the timer index with the
 *     five priorities as an $in on tp and a sort on ta, which the server answers by merging five
 *     ordered index ranges;
 *   - the earliest live claim expiry qe of a ready task, and te of a due one (the entries
 *     claim-next skips: the tasks in flight).
 */
import type { WakeProbe } from "@sayiir/persistence-core";
import type { Document } from "mongodb";
import type { MongoContext } from "./context.js";

const PRIORITIES = [1, 2, 3, 4, 5];

/** Is a task of `queue` claimable at `now`? Two indexed look-ups of one _id at most. */
async function readyNow(ctx: MongoContext, queue: string, now: number): Promise<boolean> {
  const first = async (filter: Document): Promise<boolean> =>
    (
      await ctx.snapshots
        .find(filter, { projection: { _id: 1 } })
        .limit(1)
        .toArray()
    ).length > 0;
  const [ready, due] = await Promise.all([
    first({ qn: queue, qa: { $exists: true }, $or: [{ qe: null }, { qe: { $lte: now } }] }),
    first({ tn: queue, ta: { $exists: true, $lte: now }, $or: [{ te: null }, { te: { $lte: now } }] }),
  ]);
  return ready || due;
}

/** The smallest value of `field` among the entries `filter` selects (sorted by `sort`), or null. */
async function least(
  ctx: MongoContext,
  filter: Document,
  sort: Record<string, 1>,
  field: "ta" | "qe" | "te",
): Promise<number | null> {
  const [doc] = await ctx.snapshots
    .find(filter, { projection: { _id: 0, [field]: 1 } })
    .sort(sort)
    .limit(1)
    .toArray();
  const value = doc?.[field];
  return typeof value === "number" ? value : null;
}

/** The earliest future moment a task of `queue` comes due by time alone (null: none known). */
async function nextDue(ctx: MongoContext, queue: string, now: number): Promise<number | null> {
  const times = await Promise.all([
    least(ctx, { tn: queue, tp: { $in: PRIORITIES }, ta: { $exists: true, $gt: now } }, { ta: 1 }, "ta"),
    least(ctx, { qn: queue, qa: { $exists: true }, qe: { $gt: now } }, { qe: 1 }, "qe"),
    least(ctx, { tn: queue, ta: { $exists: true, $lte: now }, te: { $gt: now } }, { te: 1 }, "te"),
  ]);
  return earliest(times);
}

const earliest = (times: ReadonlyArray<number | null>): number | null =>
  times.reduce<number | null>((a, t) => (t === null || (a !== null && a <= t) ? a : t), null);

/** One look for waitForTasks (see the module comment), by the backend's clock. */
export async function probeWakeUp(ctx: MongoContext, queues: readonly string[]): Promise<WakeProbe> {
  const now = await ctx.now();
  const ready = await Promise.all(queues.map((queue) => readyNow(ctx, queue, now)));
  if (ready.includes(true)) return { ready: true, nextDueAt: null };
  return { ready: false, nextDueAt: earliest(await Promise.all(queues.map((q) => nextDue(ctx, q, now)))) };
}
