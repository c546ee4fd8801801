/*
 * Discovery (findAvailableTasks) and claim-next (claimAvailableTasks), in small steps: walk the
 * ready and timer indexes page by page (merged by key), reserve tokens, claim candidates
 * (compare-and-sets), read the inputs of what was found or claimed (inputs.ts), and give back
 * claims that will not be returned.
 */
import { type AvailableTask, BackendError, type ClaimedTask, effectiveTime } from "@sayiir/persistence-core";
import { backoffDelay, RETRY, retryOnRace, sleep } from "@sayiir/persistence-core/adapter";
import type { Document } from "mongodb";
import { claimChanges, newClaim, removeClaim, reserveTokens } from "./claims.js";
import { type MongoContext, quote, RACE } from "./context.js";
import { availableTask, readInputs } from "./inputs.js";
import { claimOn, liveClaimOn, runnableTask, toTaskClaim } from "./instance.js";
import { type ClaimEntry, type InstanceDoc, PROJECTION } from "./layout.js";

/** Attempts per candidate in claim-next before moving on to the next candidate. */
const CLAIM_NEXT_ATTEMPTS = 4;

// ---------------------------------------------------------------- walk the indexes

/**
 * One index range discovery reads: the ready entries of a queue (by effective time qa), or the
 * timer entries of a queue and priority that are due (`ta <= now`, by due time ta; their key is
 * effectiveTime(ta, priority, agingMs), in the same order as ta within one priority).
 */
type IndexRange = { kind: "ready"; queue: string } | { kind: "timer"; queue: string; priority: number };

const PRIORITIES = [1, 2, 3, 4, 5] as const;

/** The ranges discovery merges for these queues: per queue, its ready entries and its timers per priority. */
const rangesOf = (queues: readonly string[]): IndexRange[] =>
  queues.flatMap((queue): IndexRange[] => [
    { kind: "ready", queue },
    ...PRIORITIES.map((priority): IndexRange => ({ kind: "timer", queue, priority })),
  ]);

/** A keyset cursor over one index range: the page read and not yet handed out, and where it stopped. */
class IndexCursor {
  readonly range: IndexRange;
  readonly #agingMs: number;
  buffer: InstanceDoc[] = [];
  done = false;
  #after: { time: number; id: string } | null = null;

  constructor(range: IndexRange, agingMs: number) {
    this.range = range;
    this.#agingMs = agingMs;
  }

  /** The stored (time, tie-break) of a document of this range. */
  #stored(doc: InstanceDoc): [number, string] {
    return this.range.kind === "ready" ? [Number(doc.qa), String(doc.qi)] : [Number(doc.ta), String(doc.ti)];
  }

  /** The merge key of a document of this range: effective time, then instance id (hex). */
  key(doc: InstanceDoc): [number, string] {
    const [time, id] = this.#stored(doc);
    if (this.range.kind === "ready") return [time, id];
    return [effectiveTime(time, this.range.priority, this.#agingMs), id];
  }

  /**
   * Reads the next page: entries (after the last one read) whose claim expiry is null or has
   * passed at `now`, and for a timer range whose time has come, in key order.
   */
  async fill(ctx: MongoContext, now: number, size: number): Promise<void> {
    const ready = this.range.kind === "ready";
    const [time, id, expiry] = ready ? ["qa", "qi", "qe"] : ["ta", "ti", "te"];
    const and: Document[] = [{ $or: [{ [expiry]: null }, { [expiry]: { $lte: now } }] }];
    const after = this.#after;
    if (after !== null) {
      and.push({ $or: [{ [time]: { $gt: after.time } }, { [time]: after.time, [id]: { $gt: after.id } }] });
    }
    const filter: Document = ready
      ? { qn: this.range.queue, qa: { $exists: true }, $and: and }
      : { tn: this.range.queue, tp: this.range.priority, ta: { $exists: true, $lte: now }, $and: and };
    const sort: Record<string, 1> = ready ? { qn: 1, qa: 1, qi: 1 } : { tn: 1, tp: 1, ta: 1, ti: 1 };
    this.buffer = await ctx.snapshots
      .find(filter, { projection: PROJECTION.page })
      .sort(sort)
      .limit(size)
      .toArray();
    if (this.buffer.length < size) this.done = true;
    const last = this.buffer[this.buffer.length - 1];
    if (last !== undefined) {
      const [t, i] = this.#stored(last);
      this.#after = { time: t, id: i };
    }
  }
}

/** The cursor whose next entry comes first (time, then instance id in code point order). */
function earliest(cursors: readonly IndexCursor[]): IndexCursor | undefined {
  let best: IndexCursor | undefined;
  let bestKey: [number, string] | undefined;
  for (const cursor of cursors) {
    const head = cursor.buffer[0];
    if (head === undefined) continue;
    const key = cursor.key(head);
    if (bestKey === undefined || key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1])) {
      best = cursor;
      bestKey = key;
    }
  }
  return best;
}

/**
 * Walks, for each queue served, the ready index (by effective time) and the timer index up to
 * now (per priority, by due time) as one sequence, merged by effective time (ties by instance
 * id), page by page. The indexes hold only documents whose task is ready (or has a due time);
 * the claim-expiry key leaves out tasks under a live claim. Each page goes to `take` until
 * `want()` reaches 0. A document seen once (it may move from one index to the other during the
 * walk) is not handed out again.
 */
async function walkReady(
  ctx: MongoContext,
  now: number,
  queues: readonly string[],
  want: () => number,
  take: (page: InstanceDoc[]) => Promise<void>,
): Promise<void> {
  const cursors = rangesOf(queues).map((range) => new IndexCursor(range, ctx.agingMs));
  const seen = new Set<string>();
  while (want() > 0) {
    const size = Math.min(1_000, want() * 2 + 8);
    const page: InstanceDoc[] = [];
    while (page.length < size) {
      const empty = cursors.filter((c) => c.buffer.length === 0 && !c.done);
      await Promise.all(empty.map((c) => c.fill(ctx, now, size)));
      const next = earliest(cursors)?.buffer.shift();
      if (next === undefined) break;
      if (seen.has(next._id)) continue;
      seen.add(next._id);
      page.push(next);
    }
    if (page.length === 0) return;
    await take(page.filter((d) => runnableTask(d) !== undefined));
  }
}

// ---------------------------------------------------------------- findAvailableTasks

export async function findAvailableTasks(
  ctx: MongoContext,
  limit: number,
  queues: readonly string[],
): Promise<AvailableTask[]> {
  const now = await ctx.now();
  const tasks: AvailableTask[] = [];
  // A candidate whose input cannot be read (its snapshot moved on, or its record is corrupt)
  // is replaced by the next one in index order: keep walking until `limit` tasks have inputs
  // or the indexes are exhausted.
  await walkReady(
    ctx,
    now,
    queues,
    () => limit - tasks.length,
    async (page) => {
      let rest = page;
      while (rest.length > 0 && tasks.length < limit) {
        const batch = rest.slice(0, limit - tasks.length);
        rest = rest.slice(batch.length);
        const items = batch.map((doc) => ({ instanceId: doc._id, taskId: runnableTask(doc) as string }));
        const inputs = await readInputs(ctx, items, now);
        for (const item of items) {
          const got = inputs.get(item.instanceId);
          if (got !== undefined) tasks.push(availableTask(item, got));
        }
      }
    },
  );
  return tasks;
}

// ---------------------------------------------------------------- claim-next: claim

/** A claim claim-next committed (or may have committed): its instance and entry. */
interface Held {
  instanceId: string;
  entry: ClaimEntry;
}

/**
 * Claims the position's task of one ready document (as read in a page), with a token reserved
 * after that read; on a lost compare-and-set, re-reads and tries again while still ready, and
 * after CLAIM_NEXT_ATTEMPTS moves on (null). `attempted` is told of every claim about to be
 * committed (before the write), so that a commit whose outcome is unknown (the write failed in
 * flight) can still be given back.
 */
function claimCandidate(
  ctx: MongoContext,
  candidate: InstanceDoc,
  firstToken: number,
  workerId: string,
  ttlMs: number | null,
  served: ReadonlySet<string>,
  attempted: (entry: ClaimEntry) => void,
): Promise<ClaimEntry | null> {
  const instanceId = candidate._id;
  const taskId = runnableTask(candidate) as string;
  return retryOnRace(
    `claimAvailableTasks: ${quote(instanceId)}`,
    async (attempt) => {
      const doc = attempt === 0 ? candidate : await ctx.read(instanceId, PROJECTION.page);
      const token = attempt === 0 ? firstToken : await reserveTokens(ctx, 1);
      const now = await ctx.now();
      if (
        !indexedReady(doc, now, served) ||
        runnableTask(doc) !== taskId ||
        liveClaimOn(doc, taskId, now) !== undefined
      )
        return null;
      const entry = newClaim(taskId, workerId, token, now, ttlMs);
      attempted(entry);
      if (await ctx.commit(instanceId, doc, claimChanges(doc, taskId, entry, now))) return entry;
      return attempt + 1 < CLAIM_NEXT_ATTEMPTS ? RETRY : null;
    },
    { attempts: CLAIM_NEXT_ATTEMPTS, baseMs: 2, capMs: 50 },
  );
}

/**
 * Is the document (as read) in the ready index, or in the timer index with its time come, in a
 * queue served?
 */
const indexedReady = (
  doc: InstanceDoc | null,
  now: number,
  served: ReadonlySet<string>,
): doc is InstanceDoc =>
  doc !== null &&
  ((doc.qa !== undefined && served.has(String(doc.qn))) ||
    (doc.ta !== undefined && Number(doc.ta) <= now && served.has(String(doc.tn))));

/** What one batch of claim attempts won, and the first failure of one of them. */
interface BatchOutcome {
  wins: Held[];
  rejected: { reason: unknown } | undefined;
}

/**
 * Tries as many candidates as are still wanted, in parallel (at most `limit` wins), with tokens
 * reserved after the page was read. Every claim about to be committed is put in `open`; those
 * that lost their compare-and-set are taken out again once every attempt has settled.
 */
async function claimBatch(
  ctx: MongoContext,
  batch: readonly InstanceDoc[],
  workerId: string,
  ttlMs: number | null,
  served: ReadonlySet<string>,
  open: Map<number, Held>,
): Promise<BatchOutcome> {
  const first = await reserveTokens(ctx, batch.length);
  const outcomes = await Promise.allSettled(
    batch.map((doc, i) =>
      claimCandidate(ctx, doc, first + i, workerId, ttlMs, served, (entry) =>
        open.set(entry.k, { instanceId: doc._id, entry }),
      ),
    ),
  );
  const wins: Held[] = [];
  let rejected: { reason: unknown } | undefined;
  for (const [i, outcome] of outcomes.entries()) {
    if (outcome.status === "rejected") rejected ??= { reason: outcome.reason };
    else if (outcome.value !== null)
      wins.push({ instanceId: (batch[i] as InstanceDoc)._id, entry: outcome.value });
  }
  if (rejected === undefined) {
    // Every attempt settled: one that lost its compare-and-set holds nothing.
    const winning = new Set(wins.map((w) => w.entry.k));
    for (const token of [...open.keys()]) if (!winning.has(token)) open.delete(token);
  }
  return { wins, rejected };
}

// ---------------------------------------------------------------- claim-next: give back

/**
 * Gives back a claim claim-next took (or may have taken) and will not return. Matches on the
 * token, so giving back a claim that never landed, or that was taken over since, is a no-op.
 */
function giveBack(ctx: MongoContext, instanceId: string, taskId: string, token: number): Promise<void> {
  return retryOnRace(
    `giving back the claim on ${quote(instanceId)}/${quote(taskId)}`,
    async () => {
      const doc = await ctx.read(instanceId);
      if (doc === null || claimOn(doc, taskId)?.k !== token) return undefined;
      return (await removeClaim(ctx, instanceId, doc, taskId)) ? undefined : RETRY;
    },
    { ...RACE, attempts: 20 },
  );
}

/**
 * Gives back claims best-effort (a failure is retried a few times). Returns those that could
 * not be given back and never expire (no ttl): a claim with a ttl frees itself when it expires.
 */
async function giveBackAll(
  ctx: MongoContext,
  held: readonly Held[],
): Promise<{ stuck: Held[]; error: unknown }> {
  const stuck: Held[] = [];
  let error: unknown;
  await Promise.all(
    held.map(async (claim) => {
      for (let attempt = 0; attempt < 3; attempt++) {
        // Not a race but a failure: wait a little longer each time before trying again.
        if (attempt > 0) await sleep(backoffDelay(attempt * 3, 1, 50));
        try {
          await giveBack(ctx, claim.instanceId, claim.entry.t, claim.entry.k);
          return;
        } catch (e) {
          error ??= e;
        }
      }
      if (claim.entry.e === null) stuck.push(claim);
    }),
  );
  return { stuck, error };
}

// ---------------------------------------------------------------- claimAvailableTasks

/** The state of one claimAvailableTasks call. */
interface ClaimNext {
  readonly workerId: string;
  readonly limit: number;
  /** The queues served. */
  readonly served: ReadonlySet<string>;
  readonly ttlMs: number | null;
  readonly claimed: ClaimedTask[];
  /**
   * Every claim this call committed (or tried to commit, outcome unknown) and has not put in
   * `claimed`, by token. Whatever happens, each one is either returned or given back.
   */
  readonly open: Map<number, Held>;
  /** Claims won whose snapshot moved on before their input was read: given back at the end. */
  readonly toGiveBack: Held[];
}

/** Claims candidates of one page, batch by batch, and reads the inputs of the claims won. */
async function claimPage(ctx: MongoContext, state: ClaimNext, page: InstanceDoc[]): Promise<void> {
  let rest = page;
  while (rest.length > 0 && state.claimed.length < state.limit) {
    const batch = rest.slice(0, state.limit - state.claimed.length);
    rest = rest.slice(batch.length);
    const { wins, rejected } = await claimBatch(
      ctx,
      batch,
      state.workerId,
      state.ttlMs,
      state.served,
      state.open,
    );
    const items = wins.map((w) => ({ instanceId: w.instanceId, taskId: w.entry.t, token: w.entry.k }));
    const inputs = await readInputs(ctx, items, await ctx.now());
    for (const win of wins) {
      const got = inputs.get(win.instanceId);
      state.open.delete(win.entry.k);
      if (got === undefined) {
        // The snapshot moved on (or its record is corrupt) between the claim and reading its
        // input: give the claim back (once the walk is over).
        state.toGiveBack.push(win);
        continue;
      }
      const item = { instanceId: win.instanceId, taskId: win.entry.t };
      state.claimed.push({ ...availableTask(item, got), claim: toTaskClaim(win.instanceId, win.entry) });
    }
    // The claims this batch won are in `claimed`; now report the failure of another.
    if (rejected !== undefined) throw rejected.reason;
  }
}

export async function claimAvailableTasks(
  ctx: MongoContext,
  workerId: string,
  limit: number,
  ttlMs: number | null,
  queues: readonly string[],
): Promise<ClaimedTask[]> {
  const state: ClaimNext = {
    workerId,
    limit,
    served: new Set(queues),
    ttlMs,
    claimed: [],
    open: new Map(),
    toGiveBack: [],
  };
  let failure: { error: unknown } | undefined;
  try {
    await walkReady(
      ctx,
      await ctx.now(),
      queues,
      () => limit - state.claimed.length,
      (page) => claimPage(ctx, state, page),
    );
  } catch (error) {
    failure = { error };
  }
  // Claims won but not returned: given back, including those whose commit failed in flight.
  const { stuck, error: giveBackError } = await giveBackAll(ctx, [
    ...state.toGiveBack,
    ...state.open.values(),
  ]);
  // Claims already taken are returned even if a later step failed: rejecting would lose them
  // (a claim without ttl would then block its task forever).
  if (state.claimed.length > 0) return state.claimed;
  if (stuck.length > 0) {
    const names = stuck.map((s) => `${quote(s.instanceId)}/${quote(s.entry.t)} (token ${s.entry.k})`);
    throw new BackendError(
      `claimAvailableTasks: could not give back claims without ttl held by ${quote(workerId)}: ` +
        `${names.join(", ")}; release them with releaseTaskClaim`,
      { cause: failure === undefined ? giveBackError : failure.error },
    );
  }
  if (failure !== undefined) throw failure.error;
  return state.claimed;
}
