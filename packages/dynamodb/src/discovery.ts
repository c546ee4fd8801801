/*
 * findAvailableTasks and claimAvailableTasks (claim-next): the candidates of candidates.ts (ready
 * index, due timers, ended leases) verified on the base table (the indexes are eventually
 * consistent), with what made each ready (its task, the oldest pending event of its wait, or its
 * timeout), then claimed through claimReady.
 */
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { type AvailableTask, type ClaimedTask, EMPTY_BYTES } from "@sayiir/persistence-core";
import { fromStoredParts } from "@sayiir/persistence-core/adapter";
import { type Candidate, candidates } from "./candidates.js";
import { MissingChunkError, readRef } from "./chunks.js";
import { claimReady, leaseEnd } from "./claims.js";
import { type Context, quietly } from "./context.js";
import { batchGet, type Item, str } from "./dynamo.js";
import { oldestEvents, type StoredEvent } from "./events.js";
import { attemptsOf, type Head, liveForOthers, parseClaim, parseHead, type StoredClaim } from "./items.js";
import { ATTR, keyString } from "./layout.js";
import { homeOf, type IndexEntry, leasedEntry, moveLease } from "./readiness.js";

/** What made a verified task ready: its position, its wait's oldest pending event, or its timeout. */
type Why = { kind: "task" } | { kind: "event"; event: StoredEvent } | { kind: "timeout" };

/** A candidate that survived verification, with its head and claim item as read and why it is ready. */
interface Verified {
  candidate: Candidate;
  head: Head;
  claim: StoredClaim | undefined;
  why: Why;
}

/** A candidate whose head (and claim) passed the first checks. */
interface Read {
  candidate: Candidate;
  head: Head;
  claim: StoredClaim | undefined;
}

/**
 * Ready tasks in index order, verified on the base table (the index is eventually consistent):
 * the head still ready at that task, and no claim another worker must respect.
 */
export async function* verified(
  ctx: Context,
  pageSize: number,
  queues: readonly string[],
  maxBatch = 50,
): AsyncGenerator<Verified[], void, undefined> {
  const batchSize = Math.min(pageSize, maxBatch);
  let batch: Candidate[] = [];
  const seen = new Set<string>();
  // Per partition: twice its share of the page (the shards fill evenly), at least 10; a cursor
  // whose page runs out reads its next one, so the merge stays exact whatever the spread.
  const perShard = Math.min(Math.max(Math.ceil((2 * pageSize) / ctx.layout.shards), 10), 200);
  for await (const candidate of candidates(ctx, perShard, queues)) {
    if (seen.has(candidate.pk)) continue;
    seen.add(candidate.pk);
    batch.push(candidate);
    if (batch.length >= batchSize) {
      yield await verify(ctx, batch, queues);
      batch = [];
    }
  }
  if (batch.length > 0) yield await verify(ctx, batch, queues);
}

/**
 * Is the head still where the candidate was found, at that task, in a queue served, and runnable?
 * The queue is checked on the head because an index entry can lag: after a saveSnapshot moved
 * the instance from queue B to A, B's partition may still list it for a while.
 */
export function stillThere(c: Candidate, head: Head, now: number, queues: readonly string[]): boolean {
  if (head.finished || head.paused || head.positionTaskId !== c.taskId) return false;
  if (!queues.includes(head.queue)) return false;
  if (c.source !== "timer") return head.ready;
  return head.timerDue !== undefined && head.timerDue <= now;
}

/**
 * Reads the heads and claims of a batch of candidates (one BatchGetItem), then the oldest pending
 * event of each wait found in the ready index or due by its retryAt (one Query each, in
 * parallel), and keeps those still
 * ready, in a queue served (`queues`) and unclaimed. Leases seen on the way are repaired (see
 * repairLease). Exported for tests.
 */
export async function verify(
  ctx: Context,
  batch: Candidate[],
  queues: readonly string[],
): Promise<Verified[]> {
  const { layout } = ctx;
  const keys = batch.flatMap((c) => [layout.headKey(c.pk), layout.claimKey(c.pk, c.taskId)]);
  const items = await batchGet(ctx.client, ctx.tableName, keys, 100, 2);
  const byKey = new Map(items.map((item) => [keyString(item), item]));
  const now = ctx.now();
  const read: Read[] = [];
  for (const candidate of batch) {
    const headItem = byKey.get(keyString(layout.headKey(candidate.pk)));
    if (headItem === undefined || str(headItem, ATTR.instanceId) !== candidate.instanceId) continue;
    const head = parseHead(layout, headItem, candidate.instanceId) as Head;
    if (!stillThere(candidate, head, now, queues)) continue;
    const claim = parseClaim(byKey.get(keyString(layout.claimKey(candidate.pk, candidate.taskId))));
    read.push({ candidate, head, claim });
  }
  const events = await Promise.all(
    read.map(({ candidate, head }) =>
      // A wait in the timer index has an event pending only when held there by its task's retryAt.
      head.awaiting === undefined ||
      (candidate.source === "timer" && typeof attemptsOf(head, candidate.taskId)?.retryAt !== "number")
        ? []
        : oldestEvents(ctx, head, head.awaiting.eventName),
    ),
  );
  const out: Verified[] = [];
  const repairs: Array<Promise<void>> = [];
  for (const [i, r] of read.entries()) {
    const event = events[i]?.[0];
    const live = liveForOthers(ctx, r.claim, now);
    const repair = repairLease(ctx, r, live, event !== undefined, now);
    if (repair !== undefined) repairs.push(quietly(() => moveLease(ctx, r.head, repair.to)));
    const why = whyReady(r, event, now);
    if (!live && why !== undefined) out.push({ candidate: r.candidate, head: r.head, claim: r.claim, why });
  }
  await Promise.all(repairs);
  return out;
}

/**
 * Why the task is ready: not a wait (its position's task); a wait with an event pending (that
 * event wins over a passed timeout); a wait past its timeout. undefined: a wait with neither.
 */
function whyReady(r: Read, event: StoredEvent | undefined, now: number): Why | undefined {
  if (r.head.awaiting === undefined) return { kind: "task" };
  if (event !== undefined) return { kind: "event", event };
  const timeoutAt = r.head.awaiting.timeoutAt;
  return timeoutAt !== undefined && timeoutAt <= now ? { kind: "timeout" } : undefined;
}

/**
 * Where an ended lease goes (conditional on the lease read; undefined: nowhere to move): a live
 * claim (renewed, or taken over by claimTask) re-keys it to when that claim ends; otherwise it
 * goes home: the ready partition, or the timer index for a wait with no event pending.
 */
function repairLease(
  ctx: Context,
  r: Read,
  live: boolean,
  eventPending: boolean,
  now: number,
): { to: IndexEntry } | undefined {
  const { candidate: c, head } = r;
  if (c.leaseSk === undefined || head.leaseSk !== c.leaseSk) return undefined;
  if (!live) return { to: homeOf(ctx.layout, head, eventPending, now) };
  const to = leasedEntry(ctx.layout, c.instanceId, head.queue, leaseEnd(ctx, r.claim?.expiresAt));
  return to?.sk === c.leaseSk ? undefined : { to };
}

/**
 * The input of a ready task: after a wait, its event's payload (or empty bytes when it timed
 * out); otherwise the last completed task's output, else the initial input (a value of its own,
 * or inside the header of a head written before it was split out), else empty.
 * undefined: a value was replaced under the reader (the task is skipped).
 */
async function taskInput(ctx: Context, { head, why }: Verified): Promise<Uint8Array | undefined> {
  if (why.kind === "timeout") return EMPTY_BYTES;
  let ref = why.kind === "event" ? (why.event.ref ?? { inline: EMPTY_BYTES }) : head.input;
  if (why.kind === "task" && head.lastCompletedTaskId !== undefined) {
    const out = await ctx.send<{ Item?: Item }>(
      new GetItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.resultKey(head.pk, head.generation, head.lastCompletedTaskId),
        ConsistentRead: true,
      }),
    );
    ref = out.Item === undefined ? undefined : readRef(out.Item);
    if (ref === undefined) return undefined;
  }
  try {
    if (ref !== undefined) return await ctx.chunks.read(ref);
    if (head.header === undefined) return undefined;
    const header = await ctx.chunks.read(head.header);
    const snapshot = fromStoredParts({
      instanceId: head.instanceId,
      header,
      initialInput: null,
      results: [],
      lastCompletedTaskId: null,
    });
    return snapshot.initialInput ?? EMPTY_BYTES;
  } catch (error) {
    if (error instanceof MissingChunkError) return undefined;
    throw error;
  }
}

/** The available task of a verified candidate with its input: after a wait, its event or timeout. */
function availableTask(v: Verified, input: Uint8Array): AvailableTask {
  const task: AvailableTask = {
    instanceId: v.candidate.instanceId,
    taskId: v.candidate.taskId,
    input,
    workflowDefinitionHash: v.head.definitionHash,
    attempt: (attemptsOf(v.head, v.candidate.taskId)?.count ?? 0) + 1,
    priority: v.head.priority,
    queue: v.head.queue,
  };
  if (v.why.kind === "event")
    task.event = { eventName: v.why.event.eventName, sequence: v.why.event.sequence };
  if (v.why.kind === "timeout") task.timedOut = true;
  return task;
}

export async function findAvailableTasks(
  ctx: Context,
  limit: number,
  queues: readonly string[],
): Promise<AvailableTask[]> {
  const found: AvailableTask[] = [];
  for await (const batch of verified(ctx, limit, queues)) {
    const inputs = await Promise.all(batch.map((v) => taskInput(ctx, v)));
    for (const [i, v] of batch.entries()) {
      const input = inputs[i];
      if (input === undefined || found.length >= limit) continue;
      found.push(availableTask(v, input));
    }
    if (found.length >= limit) break;
  }
  return found;
}

/** Claims one verified task against the head read (the input returned is the one claimed). */
export async function claimOne(
  ctx: Context,
  v: Verified,
  workerId: string,
  ttlMs: number | null,
): Promise<ClaimedTask | undefined> {
  const input = await taskInput(ctx, v);
  if (input === undefined) return undefined;
  const { candidate, head } = v;
  const target = { head, timedOut: v.why.kind === "timeout", claim: v.claim };
  const won = await claimReady(ctx, candidate.instanceId, candidate.taskId, workerId, ttlMs, target);
  if (won === null) return undefined;
  const task = availableTask(v, input);
  // A takeover counted one more run of the task (in the write, against the attempts as read).
  return { ...task, attempt: task.attempt + (won.counted ? 1 : 0), claim: won.claim };
}

/*
 * Claim-next in rounds. The calls of one backend (the workers of one process) that are waiting
 * share one round: one discovery (the index queries and head reads), whose verified candidates are
 * handed out in index order, each caller taking the next `limit` still wanted, and claimed
 * concurrently. A call that arrives while a round runs waits for the next round, which starts
 * after it arrived (it sees every write that finished before the call). A call alone in its round,
 * after a round that lost nothing, claims exactly as one caller always did: the first candidates
 * in discovery order.
 *
 * Skipping ahead (only among ready tasks, i.e. verified candidates):
 *  - within a round, the second caller takes the candidates after the first caller's, which
 *    the first is claiming at the same moment;
 *  - after a round lost a claim (another process's worker took the task, or its head changed), the
 *    next round reads a wider window (4 x what it wants, capped at CONTENDED_WINDOW candidates
 *    but never below what it wants) and hands it out from a random offset, wrapping around:
 *    concurrent processes then try different tasks instead of the same head. Tasks before the
 *    offset stay ready for the next call. A round that loses nothing makes the next one exact.
 */

/** One claimAvailableTasks call waiting for, or taking part in, a round. */
interface Caller {
  workerId: string;
  limit: number;
  ttlMs: number | null;
  claimed: ClaimedTask[];
  failure?: { reason: unknown };
  settle: (result: { ok: ClaimedTask[] } | { error: unknown }) => void;
}

/** The rounds of one backend for one set of queues. */
interface Rounds {
  waiting: Caller[];
  running: boolean;
  /** The last round lost a claim to another worker: the next one spreads (see above). */
  contended: boolean;
}

/** Widest window a contended round reads (4 BatchGetItem requests of 100 keys). */
const CONTENDED_WINDOW = 200;

const roundsOf = new WeakMap<Context, Map<string, Rounds>>();

/**
 * Claim-next: joins the next round of this backend for these queues (see above). If some of its
 * claims fail, the call still returns the tasks it did claim (a claim without ttl would otherwise
 * never be given back) and fails only when it claimed nothing.
 */
export function claimAvailableTasks(
  ctx: Context,
  workerId: string,
  limit: number,
  ttlMs: number | null,
  queues: readonly string[],
): Promise<ClaimedTask[]> {
  const byQueues = roundsOf.get(ctx) ?? new Map<string, Rounds>();
  roundsOf.set(ctx, byQueues);
  const key = JSON.stringify([...queues].sort());
  const state = byQueues.get(key) ?? { waiting: [], running: false, contended: false };
  byQueues.set(key, state);
  return new Promise<ClaimedTask[]>((resolve, reject) => {
    state.waiting.push({
      workerId,
      limit,
      ttlMs,
      claimed: [],
      settle: (result) => ("ok" in result ? resolve(result.ok) : reject(result.error)),
    });
    if (!state.running) void drain(ctx, state, queues);
  });
}

/** Runs rounds while calls wait; each round settles every one of its callers. */
async function drain(ctx: Context, rounds: Rounds, queues: readonly string[]): Promise<void> {
  rounds.running = true;
  try {
    while (rounds.waiting.length > 0) {
      const callers = rounds.waiting.splice(0);
      try {
        rounds.contended = await round(ctx, callers, queues, rounds.contended);
      } catch (error) {
        for (const c of callers) c.failure ??= { reason: error };
      }
      for (const c of callers)
        c.settle(
          c.failure !== undefined && c.claimed.length === 0 ? { error: c.failure.reason } : { ok: c.claimed },
        );
    }
  } finally {
    rounds.running = false;
  }
}

/**
 * One round: discovery for the callers' total, candidates handed out in order (from a random
 * offset of a wider window when `contended`), claimed concurrently, until every caller has its
 * `limit`, has failed, or the candidates run out. Returns whether a claim was lost.
 */
async function round(
  ctx: Context,
  callers: Caller[],
  queues: readonly string[],
  contended: boolean,
): Promise<boolean> {
  const wanted = callers.reduce((n, c) => n + c.limit, 0);
  const window = contended ? Math.max(Math.min(wanted * 4, CONTENDED_WINDOW), wanted, 10) : wanted;
  const open = () => callers.filter((c) => c.failure === undefined && c.claimed.length < c.limit);
  let lost = false;
  try {
    for await (const batch of verified(ctx, window, queues, contended ? CONTENDED_WINDOW : 50)) {
      const pending = contended ? rotated(batch) : batch;
      for (let takers = open(); pending.length > 0 && takers.length > 0; takers = open()) {
        const attempts = takers.flatMap((c) =>
          pending.splice(0, c.limit - c.claimed.length).map((v) => ({ caller: c, v })),
        );
        const got = await Promise.allSettled(
          attempts.map(({ caller, v }) => claimOne(ctx, v, caller.workerId, caller.ttlMs)),
        );
        for (const [i, result] of got.entries()) {
          const caller = (attempts[i] as { caller: Caller }).caller;
          if (result.status === "rejected") caller.failure ??= { reason: result.reason };
          else if (result.value === undefined) lost = true;
          else caller.claimed.push(result.value);
        }
      }
      if (open().length === 0) break;
    }
  } catch (error) {
    // Discovery itself failed (after earlier batches may have claimed): same rule per caller.
    for (const c of callers) c.failure ??= { reason: error };
  }
  return lost;
}

/** The batch from a random offset, wrapping around. */
function rotated<T>(batch: T[]): T[] {
  const at = Math.floor(Math.random() * batch.length);
  return [...batch.slice(at), ...batch.slice(0, at)];
}
