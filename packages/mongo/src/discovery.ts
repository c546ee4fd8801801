/*
 * Discovery (findAvailableTasks) and claim-next (claimAvailableTasks), in small steps: walk the
 * ready and timer indexes page by page (merged by key), reserve tokens, claim candidates
 * (compare-and-sets), read the inputs of what was found or claimed (inputs.ts), and give back
 * claims that will not be returned.
 */
import { type AvailableTask, BackendError, type ClaimedTask, effectiveTime } from "@sayiir/persistence-core";
import type { Document } from "mongodb";
import {
  claimChanges,
  claimFence,
  giveBackAll,
  type Held,
  newClaim,
  reserveTokens,
  sameClaim,
} from "./claims.js";
import { type MongoContext, quote } from "./context.js";
import { availableTask, type InputItem, needsInline, readInputs } from "./inputs.js";
import { claimOn, liveClaimOn, runnableTask, toTaskClaim } from "./instance.js";
import { type ClaimEntry, type InstanceDoc, PROJECTION } from "./layout.js";

/** Attempts per candidate in claim-next before moving on to the next candidate. */
const CLAIM_NEXT_ATTEMPTS = 4;
/** Walks of the indexes per claim-next call (a walk that meets a stale page starts again). */
const WALKS = 4;

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
  async fill(ctx: MongoContext, now: number, size: number, shared = false): Promise<void> {
    if (shared && this.range.kind === "ready" && this.#after === null) {
      // Claim-next's first page of a ready range: a read another call of this backend has in
      // flight is joined instead of sending the same query again (see MongoContext.claimNext).
      const heads = ctx.claimNext.heads;
      let head = heads.get(this.range.queue);
      if (head === undefined) {
        const read = this.#read(ctx, now, size).then((docs) => ({ docs, size }));
        head = read;
        heads.set(this.range.queue, read);
        const forget = () => {
          if (heads.get(this.range.queue) === read) heads.delete(this.range.queue);
        };
        read.then(forget, forget);
      }
      const got = await head;
      this.#took([...got.docs], got.size);
      return;
    }
    this.#took(await this.#read(ctx, now, size), size);
  }

  /** Keeps a page read with this size, and where it stopped. */
  #took(docs: InstanceDoc[], size: number): void {
    this.buffer = docs;
    if (this.buffer.length < size) this.done = true;
    const last = this.buffer[this.buffer.length - 1];
    if (last !== undefined) {
      const [t, i] = this.#stored(last);
      this.#after = { time: t, id: i };
    }
  }

  /** The query of the next page. */
  #read(ctx: MongoContext, now: number, size: number): Promise<InstanceDoc[]> {
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
    return ctx.snapshots.find(filter, { projection: PROJECTION.page }).sort(sort).limit(size).toArray();
  }
}

/**
 * Is a timer entry of one of the queues due at `now` and not under a live claim? One query over
 * the timer index (queue, then every priority up to `now`), instead of one per priority.
 */
async function timerDue(ctx: MongoContext, now: number, queues: readonly string[]): Promise<boolean> {
  const filter: Document = {
    tn: queues.length === 1 ? queues[0] : { $in: [...queues] },
    ta: { $exists: true, $lte: now },
    $or: [{ te: null }, { te: { $lte: now } }],
  };
  return (
    (
      await ctx.snapshots
        .find(filter, { projection: { _id: 1 } })
        .limit(1)
        .toArray()
    ).length > 0
  );
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
  skipped: () => number = () => 0,
  shared = false,
): Promise<void> {
  const cursors = rangesOf(queues).map((range) => new IndexCursor(range, ctx.agingMs));
  const seen = new Set<string>();
  const pageSize = () => Math.min(1_000, want() * 2 + 8 + skipped());
  // The first page of the ready ranges, and beside it one probe for a due timer in any of the
  // queues: when there is none (the common case), the timer ranges are not read at all.
  const ready = cursors.filter((c) => c.range.kind === "ready");
  const [due] = await Promise.all([
    timerDue(ctx, now, queues),
    ...ready.map((c) => c.fill(ctx, now, pageSize(), shared)),
  ]);
  if (!due) for (const cursor of cursors) if (cursor.range.kind === "timer") cursor.done = true;
  while (want() > 0) {
    const size = pageSize();
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

/**
 * A candidate of claim-next: its document as last read (a page of the walk, or the read-back
 * after a lost compare-and-set), its task, its place in the walk, and the claims tried on it.
 */
interface Candidate {
  doc: InstanceDoc;
  taskId: string;
  seq: number;
  tries: number;
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

/** Can the candidate's task be claimed on this version of its document at `now`? */
const claimable = (
  doc: InstanceDoc | undefined,
  taskId: string,
  now: number,
  served: ReadonlySet<string>,
): doc is InstanceDoc =>
  doc !== undefined &&
  indexedReady(doc, now, served) &&
  runnableTask(doc) === taskId &&
  liveClaimOn(doc, taskId, now) === undefined;

/** How many superseded versions the backend remembers (see MongoContext.claimNext). */
const SUPERSEDED_MAX = 10_000;

/** Remembers that this backend's claim replaced `version` of the instance's document. */
function superseded(ctx: MongoContext, instanceId: string, version: string): void {
  const versions = ctx.claimNext.superseded;
  versions.delete(instanceId);
  versions.set(instanceId, version);
  if (versions.size > SUPERSEDED_MAX) {
    const oldest = versions.keys().next();
    if (oldest.done !== true) versions.delete(oldest.value);
  }
}

/**
 * Tries one claim on each candidate of the batch that is still claimable: tokens reserved after
 * the candidates were read, every compare-and-set in ONE bulk write (unordered), then ONE read
 * of the documents (readInputs) that tells which claims landed (the document holds our token)
 * and gives their inputs. No re-read per candidate: a candidate whose compare-and-set lost is
 * judged on the document read back; returned for another try when it is still claimable (its
 * document changed for another reason), dropped when another worker claimed it. Every claim
 * about to be committed is put in `state.open` and taken out once its outcome is known, so a
 * failure anywhere leaves it there to be given back.
 */
async function claimBatch(
  ctx: MongoContext,
  state: ClaimNext,
  batch: readonly Candidate[],
): Promise<Candidate[]> {
  const first = await reserveTokens(ctx, batch.length);
  const now = await ctx.now();
  const tries: Array<{ candidate: Candidate; entry: ClaimEntry }> = [];
  const ops = [];
  for (const [i, candidate] of batch.entries()) {
    const { doc, taskId } = candidate;
    if (!claimable(doc, taskId, now, state.served)) continue;
    const entry = newClaim(taskId, state.workerId, first + i, now, state.ttlMs);
    const { filter, update } = ctx.casUpdate(doc._id, doc, claimChanges(doc, taskId, entry, now));
    ops.push({ updateOne: { filter: { ...filter, ...claimFence(doc, taskId) }, update } });
    tries.push({ candidate: { ...candidate, tries: candidate.tries + 1 }, entry });
    state.open.set(entry.k, { instanceId: doc._id, entry });
  }
  if (ops.length === 0) return [];
  await ctx.snapshots.bulkWrite(ops, { ordered: false });
  const docs = new Map<string, InstanceDoc>();
  const items = tries.map(({ candidate, entry }) => ({
    instanceId: candidate.doc._id,
    taskId: entry.t,
    token: entry.k,
    inline: needsInline(candidate.doc, now),
  }));
  const inputs = await readInputs(ctx, items, await ctx.now(), docs);
  const retry: Candidate[] = [];
  let lost = false;
  for (const [i, { candidate, entry }] of tries.entries()) {
    const instanceId = candidate.doc._id;
    const doc = docs.get(instanceId);
    state.open.delete(entry.k);
    if (doc !== undefined && sameClaim(claimOn(doc, entry.t), entry)) {
      // Won. A page of another call of this process read before this claim landed shows the
      // version it replaced: that call skips it.
      superseded(ctx, instanceId, candidate.doc.v);
      const got = inputs.get(instanceId);
      if (got === undefined) {
        // The snapshot moved on (or its record is corrupt) between the claim and reading its
        // input: give the claim back (once the walk is over).
        state.toGiveBack.push({ instanceId, entry });
        continue;
      }
      const task = availableTask(items[i] as InputItem, got);
      state.won.push({ seq: candidate.seq, task: { ...task, claim: toTaskClaim(instanceId, entry) } });
      state.taken.add(instanceId);
    } else if (claimable(doc, candidate.taskId, now, state.served)) {
      if (candidate.tries < CLAIM_NEXT_ATTEMPTS) retry.push({ ...candidate, doc });
    } else {
      // Claimed by another worker, or already run and completed: the page is stale.
      lost = true;
    }
  }
  ctx.claimNext.contended = lost;
  // The last walk goes on through the pages instead (so [] still means none was left).
  if (lost && state.walk < WALKS - 1) state.stale = true;
  return retry;
}

// ---------------------------------------------------------------- claimAvailableTasks

/** The state of one claimAvailableTasks call. */
interface ClaimNext {
  readonly workerId: string;
  readonly limit: number;
  /** The queues served. */
  readonly served: ReadonlySet<string>;
  readonly ttlMs: number | null;
  /** The claims won with their inputs, each with its candidate's place in the walk. */
  readonly won: Array<{ seq: number; task: ClaimedTask }>;
  /** The next place in the walk. */
  seq: number;
  /** A batch lost candidates to other workers: the rest of the page is stale, walk again. */
  stale: boolean;
  /** The walk of the indexes this call is on (0 .. WALKS - 1). */
  walk: number;
  /** The instances whose task this call claimed (a later walk never hands one out twice). */
  readonly taken: Set<string>;
  /**
   * Every claim this call committed (or tried to commit, outcome unknown) and has not put in
   * `won`, by token. Whatever happens, each one is either returned or given back.
   */
  readonly open: Map<number, Held>;
  /** Claims won whose snapshot moved on before their input was read: given back at the end. */
  readonly toGiveBack: Held[];
}

/**
 * Claims candidates of one page, batch by batch (at most as many as are still wanted), in walk
 * order: a candidate another call of this backend is claiming right now, or whose version as
 * read this backend's claim already replaced, is skipped (see README, claim-next); a candidate
 * whose compare-and-set lost but that is still claimable goes first in the next batch.
 */
async function claimPage(ctx: MongoContext, state: ClaimNext, page: InstanceDoc[]): Promise<void> {
  const { claiming, superseded: replaced } = ctx.claimNext;
  let pending: Candidate[] = page.map((doc) => ({
    doc,
    taskId: runnableTask(doc) as string,
    seq: state.seq++,
    tries: 0,
  }));
  while (pending.length > 0 && state.won.length < state.limit && !state.stale) {
    const want = state.limit - state.won.length;
    const open = pending.filter(
      (c) => !claiming.has(c.doc._id) && replaced.get(c.doc._id) !== c.doc.v && !state.taken.has(c.doc._id),
    );
    if (open.length === 0) return;
    // Under contention (claims of this backend lately lost to other workers' claims), a random
    // window of the candidates, so that backends do not all race for the same head.
    const start = ctx.claimNext.contended
      ? Math.floor(Math.random() * (Math.max(open.length - want, 0) + 1))
      : 0;
    const batch = open.slice(start, start + want);
    const taken = new Set(batch);
    const rest = open.filter((c) => !taken.has(c));
    for (const candidate of batch) claiming.add(candidate.doc._id);
    try {
      pending = [...(await claimBatch(ctx, state, batch)), ...rest];
    } finally {
      for (const candidate of batch) claiming.delete(candidate.doc._id);
    }
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
    won: [],
    seq: 0,
    stale: false,
    walk: 0,
    taken: new Set(),
    open: new Map(),
    toGiveBack: [],
  };
  let failure: { error: unknown } | undefined;
  ctx.claimNext.calls++;
  try {
    // A walk that met a stale page (its candidates taken by other workers meanwhile) starts
    // again from the head of the indexes, a few times at most.
    for (; state.walk < WALKS && state.won.length < limit; state.walk++) {
      state.stale = false;
      await walkReady(
        ctx,
        await ctx.now(),
        queues,
        () => (state.stale ? 0 : limit - state.won.length),
        (page) => claimPage(ctx, state, page),
        () => {
          // Room for what other calls of this backend are claiming or will take from a shared
          // page, and under contention for a random window (see claimPage).
          const { claiming, calls, contended } = ctx.claimNext;
          const want = limit - state.won.length;
          return claiming.size + (calls - 1) * 2 * want + (contended ? 4 * want : 0);
        },
        true,
      );
      if (!state.stale) break;
    }
  } catch (error) {
    failure = { error };
  } finally {
    ctx.claimNext.calls--;
  }
  // Claims won but not returned: given back, including those whose commit failed in flight.
  const { stuck, error: giveBackError } = await giveBackAll(ctx, [
    ...state.toGiveBack,
    ...state.open.values(),
  ]);
  // Claims already taken are returned even if a later step failed: rejecting would lose them
  // (a claim without ttl would then block its task forever). In walk order.
  const claimed = state.won.sort((x, y) => x.seq - y.seq).map((w) => w.task);
  if (claimed.length > 0) return claimed;
  if (stuck.length > 0) {
    const names = stuck.map((s) => `${quote(s.instanceId)}/${quote(s.entry.t)} (token ${s.entry.k})`);
    throw new BackendError(
      `claimAvailableTasks: could not give back claims without ttl held by ${quote(workerId)}: ` +
        `${names.join(", ")}; release them with releaseTaskClaim`,
      { cause: failure === undefined ? giveBackError : failure.error },
    );
  }
  if (failure !== undefined) throw failure.error;
  return claimed;
}
