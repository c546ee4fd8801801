/*
 * Discovery (findAvailableTasks) and claim-next (claimAvailableTasks), in small steps: walk the
 * ready index page by page, reserve tokens, claim candidates (compare-and-sets), read the inputs
 * of what was found or claimed, and give back claims that will not be returned.
 */
import { type AvailableTask, BackendError, type ClaimedTask } from "@sayiir/persistence-core";
import { backoffDelay, fromStoredParts, RETRY, retryOnRace, sleep } from "@sayiir/persistence-core/adapter";
import type { Document } from "mongodb";
import { newClaim, removeClaim, reserveTokens } from "./claims.js";
import { type MongoContext, quote, RACE } from "./context.js";
import { claimOn, liveClaimOn, toTaskClaim, withClaim } from "./instance.js";
import { type ClaimEntry, type InstanceDoc, isSnapshot, PROJECTION } from "./layout.js";
import { headerBytes, initialInputBytes } from "./snapshots.js";

/** Attempts per candidate in claim-next before moving on to the next candidate. */
const CLAIM_NEXT_ATTEMPTS = 4;

/** A task to read the input of: its instance, and the token of the claim just taken, if any. */
interface InputItem {
  instanceId: string;
  taskId: string;
  token?: number;
}

/** The input of a task and the definition hash of its workflow. */
interface Input {
  input: Uint8Array;
  definitionHash: string;
}

type Eligible = InstanceDoc & { d: string };

// ---------------------------------------------------------------- walk the index

/**
 * Walks the ready index (oldest updatedAt first, ties by instance id) page by page. The index
 * holds only documents whose position's task is ready; `qe` (the expiry of a claim on that
 * task, null if unclaimed) leaves out tasks under a live claim. Each page goes to `take`
 * until `want()` reaches 0.
 */
async function walkReady(
  ctx: MongoContext,
  now: number,
  want: () => number,
  take: (page: InstanceDoc[]) => Promise<void>,
): Promise<void> {
  let after: { qa: number; qi: string } | null = null;
  while (want() > 0) {
    const pageSize = Math.min(1_000, want() * 2 + 8);
    const and: Document[] = [{ $or: [{ qe: null }, { qe: { $lte: now } }] }];
    if (after !== null)
      and.push({ $or: [{ qa: { $gt: after.qa } }, { qa: after.qa, qi: { $gt: after.qi } }] });
    const page = await ctx.snapshots
      .find({ qa: { $exists: true }, $and: and }, { projection: PROJECTION.page })
      .sort({ qa: 1, qi: 1 })
      .limit(pageSize)
      .toArray();
    if (page.length === 0) return;
    await take(page.filter((d) => typeof d.p === "string"));
    const last = page[page.length - 1] as InstanceDoc;
    after = { qa: last.qa as number, qi: last.qi as string };
    if (page.length < pageSize) return;
  }
}

// ---------------------------------------------------------------- read inputs

/**
 * The current document of an item if its task can run: a snapshot still at that task, not
 * finished, without a result for it, and not under a live claim, unless `token` names that
 * claim (claim-next reading the inputs of what it just claimed).
 */
function eligible(doc: InstanceDoc | undefined, item: InputItem, now: number): Eligible | undefined {
  if (!isSnapshot(doc) || doc.f === true || doc.p !== item.taskId) return undefined;
  if ((doc.r ?? []).some((e) => e.t === item.taskId)) return undefined;
  const live = liveClaimOn(doc, item.taskId, now);
  if (item.token === undefined ? live !== undefined : claimOn(doc, item.taskId)?.k !== item.token)
    return undefined;
  return doc;
}

/** The blob of the last completed task's output: the input, unless it is the initial input. */
const outputRef = (doc: InstanceDoc): string | undefined =>
  doc.l === null || doc.l === undefined ? undefined : (doc.r ?? []).find((e) => e.t === doc.l)?.g;

/** Needs the document's inline payloads (header or initial input) to know the input. */
const needsInline = (doc: InstanceDoc): boolean =>
  outputRef(doc) === undefined && (doc.hg === undefined || doc.ig === undefined);

/**
 * The documents of the items, as mutations read them (no inline payloads); those of tasks whose
 * input is the initial input and that keep a payload inline are read again in full, and judged
 * on that newer version.
 */
async function readDocs(
  ctx: MongoContext,
  items: readonly InputItem[],
  now: number,
): Promise<Map<string, InstanceDoc>> {
  const byId = new Map<string, InstanceDoc>();
  const docs = await ctx.snapshots
    .find({ _id: { $in: items.map((c) => c.instanceId) } }, { projection: PROJECTION.state })
    .toArray();
  for (const doc of docs) byId.set(doc._id, doc);
  const again = items
    .filter((item) => {
      const doc = eligible(byId.get(item.instanceId), item, now);
      return doc !== undefined && needsInline(doc);
    })
    .map((item) => item.instanceId);
  if (again.length > 0) {
    for (const id of again) byId.delete(id);
    const full = await ctx.snapshots.find({ _id: { $in: again } }).toArray();
    for (const doc of full) byId.set(doc._id, doc);
  }
  return byId;
}

/**
 * The input of a task from its document and the blobs read: the last output, else the initial
 * input (stored beside the header, or inside a header written before the split), else empty
 * bytes. undefined: a blob is gone (the snapshot moved on) or the record does not decode.
 */
function inputOf(doc: Eligible, blobs: Map<string, Uint8Array>): Uint8Array | undefined {
  const ref = outputRef(doc);
  if (ref !== undefined) return blobs.get(ref);
  if (doc.hg !== undefined && !blobs.has(doc.hg)) return undefined;
  if (doc.ig !== undefined && !blobs.has(doc.ig)) return undefined;
  try {
    const snapshot = fromStoredParts({
      instanceId: doc._id,
      header: headerBytes(doc, blobs),
      initialInput: initialInputBytes(doc, blobs),
      results: [],
      lastCompletedTaskId: null,
    });
    return snapshot.initialInput ?? new Uint8Array(0);
  } catch {
    return undefined; // a corrupt record cannot be run; loadSnapshot reports it
  }
}

/**
 * Reads the current documents of tasks and their inputs. A task whose snapshot moved on (no
 * longer at that task, completed, finished) is left out, as is one under a live claim that is
 * not the item's own and one whose record cannot be decoded (loadSnapshot reports it).
 */
async function readInputs(
  ctx: MongoContext,
  items: readonly InputItem[],
  now: number,
): Promise<Map<string, Input>> {
  const out = new Map<string, Input>();
  if (items.length === 0) return out;
  const byId = await readDocs(ctx, items, now);
  const plan: Eligible[] = [];
  const need: string[] = [];
  for (const item of items) {
    const doc = eligible(byId.get(item.instanceId), item, now);
    if (doc === undefined) continue;
    const ref = outputRef(doc);
    if (ref !== undefined) need.push(ref);
    else need.push(...[doc.hg, doc.ig].filter((g): g is string => g !== undefined));
    plan.push(doc);
  }
  const blobs = await ctx.chunks.read(need);
  for (const doc of plan) {
    const input = inputOf(doc, blobs);
    if (input !== undefined) out.set(doc._id, { input, definitionHash: doc.d });
  }
  return out;
}

// ---------------------------------------------------------------- findAvailableTasks

export async function findAvailableTasks(ctx: MongoContext, limit: number): Promise<AvailableTask[]> {
  const now = await ctx.now();
  const tasks: AvailableTask[] = [];
  // A candidate whose input cannot be read (its snapshot moved on, or its record is corrupt)
  // is replaced by the next one in index order: keep walking until `limit` tasks have inputs
  // or the index is exhausted.
  await walkReady(
    ctx,
    now,
    () => limit - tasks.length,
    async (page) => {
      let rest = page;
      while (rest.length > 0 && tasks.length < limit) {
        const batch = rest.slice(0, limit - tasks.length);
        rest = rest.slice(batch.length);
        const items = batch.map((doc) => ({ instanceId: doc._id, taskId: doc.p as string }));
        const inputs = await readInputs(ctx, items, now);
        for (const c of items) {
          const got = inputs.get(c.instanceId);
          if (got === undefined) continue;
          tasks.push({
            instanceId: c.instanceId,
            taskId: c.taskId,
            input: got.input,
            workflowDefinitionHash: got.definitionHash,
          });
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
  attempted: (entry: ClaimEntry) => void,
): Promise<ClaimEntry | null> {
  const instanceId = candidate._id;
  const taskId = candidate.p as string;
  return retryOnRace(
    `claimAvailableTasks: ${quote(instanceId)}`,
    async (attempt) => {
      const doc = attempt === 0 ? candidate : await ctx.read(instanceId, PROJECTION.page);
      const token = attempt === 0 ? firstToken : await reserveTokens(ctx, 1);
      const now = await ctx.now();
      if (doc?.qa === undefined || doc.p !== taskId || liveClaimOn(doc, taskId, now) !== undefined)
        return null;
      const entry = newClaim(taskId, workerId, token, now, ttlMs);
      attempted(entry);
      if (await ctx.commit(instanceId, doc, { c: withClaim(doc, taskId, entry, now) })) return entry;
      return attempt + 1 < CLAIM_NEXT_ATTEMPTS ? RETRY : null;
    },
    { attempts: CLAIM_NEXT_ATTEMPTS, baseMs: 2, capMs: 50 },
  );
}

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
  open: Map<number, Held>,
): Promise<BatchOutcome> {
  const first = await reserveTokens(ctx, batch.length);
  const outcomes = await Promise.allSettled(
    batch.map((doc, i) =>
      claimCandidate(ctx, doc, first + i, workerId, ttlMs, (entry) =>
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
    const { wins, rejected } = await claimBatch(ctx, batch, state.workerId, state.ttlMs, state.open);
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
      state.claimed.push({
        instanceId: win.instanceId,
        taskId: win.entry.t,
        input: got.input,
        workflowDefinitionHash: got.definitionHash,
        claim: toTaskClaim(win.instanceId, win.entry),
      });
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
): Promise<ClaimedTask[]> {
  const state: ClaimNext = { workerId, limit, ttlMs, claimed: [], open: new Map(), toGiveBack: [] };
  let failure: { error: unknown } | undefined;
  try {
    await walkReady(
      ctx,
      await ctx.now(),
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
