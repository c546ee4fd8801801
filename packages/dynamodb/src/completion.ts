/*
 * The fenced writes of task results: saveTaskResult (one transaction: the head's update, the
 * result put, the fence check) and completeTasks (one BatchGetItem for the batch, then per
 * instance the transactions planned by completion-plan.ts).
 */
import { GetItemCommand, type TransactWriteItem, TransactWriteItemsCommand } from "@aws-sdk/client-dynamodb";
import { type CompletionOutcome, type Fence, failures, type ValidCompletion } from "@sayiir/persistence-core";
import { RETRY, resultRefusal, retryOnRace } from "@sayiir/persistence-core/adapter";
import { type ChunkSet, chunkSetOf, readRef, type ValueRef } from "./chunks.js";
import {
  completionTransaction,
  cut,
  type Entry,
  headUpdate,
  inlineBytes,
  type Prior,
  priorOf,
  resultItem,
  settleAll,
} from "./completion-plan.js";
import { type Context, quietly, quote, RACE_ATTEMPTS, tombstoneTtl } from "./context.js";
import {
  batchGet,
  cancellationReasons,
  expressions,
  type Item,
  isConflictOnly,
  type Key,
  str,
} from "./dynamo.js";
import { fenceCheck, getHead, type Head, heldView, parseClaim, parseHead, writeView } from "./items.js";
import { ATTR, freshId, keyString, names, VALUE } from "./layout.js";
import { completeStep, type Reread } from "./step.js";

/** Instances whose completions are committed at once by one completeTasks call. */
const COMPLETION_LANES = 16;
/** Outputs whose chunks are written at once by one completeTasks call. */
const CHUNK_LANES = 4;

// ---------------------------------------------------------------- saveTaskResult

/** What saveTaskResult sent last: to tell, after a failure, whether its chunks may be deleted. */
interface SentResult {
  done: boolean;
  /** False while a transaction whose outcome we cannot know is the last one sent. */
  definite: boolean;
  generation: string;
}

/**
 * saveTaskResult: the output's chunks (if large), then one transaction: the head's update (see
 * headUpdate), the result put and, when fenced, the claim's condition check. A lost race is
 * judged again on the head the failed condition returned.
 */
export async function saveTaskResult(
  ctx: Context,
  instanceId: string,
  taskId: string,
  output: Uint8Array,
  fence: Fence | undefined,
): Promise<void> {
  const pk = ctx.layout.instancePk(instanceId);
  let head = await getHead(ctx, instanceId);
  if (head === undefined) throw failures.snapshotNotFound(instanceId);
  const ref = await ctx.chunks.write(output, pk);
  const sent: SentResult = { done: false, definite: true, generation: head.generation };
  try {
    await retryOnRace(
      `saveTaskResult on ${quote(instanceId)}`,
      async () => {
        const current = head as Head;
        if (current.finished)
          throw resultRefusal(instanceId, fence, await writeView(ctx, pk, fence, current));
        const outcome = await sendResult(ctx, current, taskId, ref, fence, sent);
        if (outcome === "landed") return undefined;
        head = outcome.head;
        if (head === undefined) throw failures.snapshotNotFound(instanceId);
        return RETRY;
      },
      { attempts: RACE_ATTEMPTS },
    );
  } finally {
    if (!sent.done) await quietly(() => dropUnusedChunks(ctx, pk, taskId, ref, sent));
  }
}

/**
 * One attempt of saveTaskResult's transaction. "landed", or the head as it now is (its failed
 * condition's ALL_OLD, or a fresh read after a conflict). A lost fence is ClaimLost.
 */
async function sendResult(
  ctx: Context,
  head: Head,
  taskId: string,
  ref: ValueRef,
  fence: Fence | undefined,
  sent: SentResult,
): Promise<"landed" | { head: Head | undefined }> {
  const { layout } = ctx;
  const now = ctx.now();
  const update = headUpdate(layout, head, taskId, head.positionTaskId === taskId, now);
  const items: TransactWriteItem[] = [
    {
      Update: {
        TableName: ctx.tableName,
        Key: layout.headKey(head.pk),
        ...expressions(
          { UpdateExpression: update.update, ConditionExpression: update.condition },
          update.values,
        ),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      },
    },
    {
      Put: { TableName: ctx.tableName, Item: resultItem(layout, head.pk, head.generation, taskId, now, ref) },
    },
  ];
  if (fence !== undefined) items.push(fenceCheck(ctx, head.pk, fence, now));
  // The result item may replace an earlier output of the same task: find its chunks first.
  // (Never our own set: an earlier attempt of this call may have landed after all.)
  const ours = chunkSetOf(ref);
  const replaced = (await replacedChunks(ctx, head, taskId)).filter(
    (set) => set.chunkSetId !== ours?.chunkSetId,
  );
  try {
    sent.generation = head.generation;
    sent.definite = false;
    await ctx.send(
      () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
    );
    sent.done = true;
    await quietly(() => ctx.chunks.delete(replaced));
    return "landed";
  } catch (error) {
    const reasons = cancellationReasons(error);
    // Cancelled (conflicts included): the transaction surely did not apply.
    if (reasons !== undefined) sent.definite = true;
    if (reasons === undefined || isConflictOnly(error)) throw error;
    const headReason = reasons[0];
    let found: Head | undefined = head;
    if (headReason?.Code === "ConditionalCheckFailed") {
      found = parseHead(layout, headReason.Item, head.instanceId);
      if (found === undefined) throw failures.snapshotNotFound(head.instanceId);
    }
    if (fence !== undefined && reasons[2]?.Code === "ConditionalCheckFailed")
      throw failures.fenceRejected(head.instanceId, fence);
    if (headReason?.Code === "ConditionalCheckFailed") return { head: found };
    if (!reasons.some((r) => r.Code === "TransactionConflict")) throw error;
    return { head: await getHead(ctx, head.instanceId) };
  }
}

/** The chunk set of the task's current result under the head's generation, if chunked. */
async function replacedChunks(ctx: Context, head: Head, taskId: string): Promise<ChunkSet[]> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.resultKey(head.pk, head.generation, taskId),
      ConsistentRead: true,
      ...expressions({ ProjectionExpression: names(VALUE.chunkSet, VALUE.count, VALUE.length) }),
    }),
  );
  const set = out.Item === undefined ? undefined : chunkSetOf(readRef(out.Item));
  return set ? [set] : [];
}

/**
 * saveTaskResult failed: its chunks go, unless the outcome is unknown (a lost response, a
 * timeout) and the stored result points at them (it committed after all; else cleanup() will).
 */
async function dropUnusedChunks(
  ctx: Context,
  pk: string,
  taskId: string,
  ref: ValueRef,
  sent: SentResult,
): Promise<void> {
  const ours = chunkSetOf(ref);
  if (ours === undefined) return;
  if (!sent.definite) {
    const out = await ctx.send<{ Item?: Item }>(
      new GetItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.resultKey(pk, sent.generation, taskId),
        ConsistentRead: true,
      }),
    );
    if (out.Item !== undefined && chunkSetOf(readRef(out.Item))?.chunkSetId === ours.chunkSetId) return;
  }
  await ctx.chunks.delete([ours]);
}

// ---------------------------------------------------------------- completeTasks

/** One completion of a completeTasks call, with what the call learns about it on the way. */
export interface Completing {
  index: number;
  c: ValidCompletion;
  pk: string;
  nonce: string;
  /** Where its output is stored (chunks written before any commit). */
  ref?: ValueRef;
  /** Its claim item as last read. */
  claim?: Item;
  /** What its result item held when last read (the put is conditioned on it). */
  prior?: Prior;
  /** The chunk set of the result it replaces: garbage once it commits. */
  replacing?: ChunkSet;
}

/** What one completeTasks call collects across its instances. */
export interface CompletionCall {
  outcomes: CompletionOutcome[];
  /** Completions whose chunk set a result may point at (landed, or sent with an unknown outcome). */
  kept: Set<Completing>;
  /** Chunk sets of results replaced by completions that landed. */
  replaced: ChunkSet[];
}

/**
 * completeTasks: the chunks of large outputs are written while ONE BatchGetItem reads every head
 * and claim item concerned; then each instance commits its completions in one TransactWriteItems
 * (or a few, under the 100-item / 4 MB limits): the head's update once, and per completion its
 * result put and its claim's tombstone, conditioned as saveTaskResult's fence is. Instances run
 * in parallel (bounded). Completions are judged on the items read, in saveTaskResult's order, so
 * a refused one is not sent at all; a cancelled transaction is judged again on a fresh read.
 * A completion with `next` is one step of its own (step.ts): one transaction per completion.
 */
export async function completeTasks(
  ctx: Context,
  completions: readonly ValidCompletion[],
): Promise<CompletionOutcome[]> {
  const call: CompletionCall = { outcomes: completions.map(() => null), kept: new Set(), replaced: [] };
  const groups = new Map<string, Completing[]>();
  for (const [index, c] of completions.entries()) {
    const item: Completing = { index, c, pk: ctx.layout.instancePk(c.instanceId), nonce: freshId() };
    const group = groups.get(c.instanceId);
    if (group === undefined) groups.set(c.instanceId, [item]);
    else group.push(item);
  }
  const all = [...groups.values()].flat();
  try {
    const [read, wrote] = await Promise.allSettled([
      readForCompletion(ctx, all),
      settleAll(all, CHUNK_LANES, async (item) => {
        // A step to Completed or Failed keeps no results: its output is not stored.
        const kept = item.c.next === undefined || !["Completed", "Failed"].includes(item.c.next.kind);
        if (kept) item.ref = await ctx.chunks.write(item.c.output, item.pk);
      }),
    ]);
    if (wrote.status === "rejected") throw wrote.reason;
    if (read.status === "rejected") throw read.reason;
    const items = read.value;
    const reread: Reread = (open, generations) => readForCompletion(ctx, open, generations);
    await settleAll([...groups], COMPLETION_LANES, async ([instanceId, group]) => {
      // In call order: runs of completions without `next` together, each step on its own (a later
      // segment of the same instance reads the head and its claims again).
      for (const [n, segment] of segments(group).entries()) {
        const read = n === 0 ? items : await readForCompletion(ctx, segment);
        const pk = (segment[0] as Completing).pk;
        const head = parseHead(ctx.layout, read.get(keyString(ctx.layout.headKey(pk))), instanceId);
        for (const item of segment) item.claim = read.get(keyString(ctx.layout.claimKey(pk, item.c.taskId)));
        const first = segment[0] as Completing;
        if (first.c.next === undefined) await completeOn(ctx, { instanceId, head, open: segment }, call);
        else await completeStep(ctx, first, head, call, reread);
      }
    });
    return call.outcomes;
  } finally {
    const ours = new Set(all.map((item) => chunkSetOf(item.ref)?.chunkSetId));
    const garbage = [
      ...all.filter((item) => !call.kept.has(item)).map((item) => chunkSetOf(item.ref)),
      ...call.replaced.filter((set) => !ours.has(set.chunkSetId)),
    ].filter((set) => set !== undefined);
    if (garbage.length > 0) await quietly(() => ctx.chunks.delete(garbage));
  }
}

/** The completions of one instance in call order: runs without `next`, and each step alone. */
function segments(group: readonly Completing[]): Completing[][] {
  const out: Completing[][] = [];
  for (const item of group) {
    const last = out[out.length - 1];
    if (item.c.next === undefined && last !== undefined && last[0]?.c.next === undefined) last.push(item);
    else out.push([item]);
  }
  return out;
}

/** Strongly consistent reads of the heads and claim items (and, given a generation, result items). */
async function readForCompletion(
  ctx: Context,
  items: readonly Completing[],
  generations?: ReadonlyMap<string, string>,
): Promise<Map<string, Item>> {
  const keys = new Map<string, Key>();
  for (const item of items) {
    const wanted = [ctx.layout.headKey(item.pk), ctx.layout.claimKey(item.pk, item.c.taskId)];
    const generation = generations?.get(item.pk);
    if (generation !== undefined) wanted.push(ctx.layout.resultKey(item.pk, generation, item.c.taskId));
    for (const key of wanted) keys.set(keyString(key), key);
  }
  const found = await batchGet(ctx.client, ctx.tableName, [...keys.values()], 100, 4);
  return new Map(found.map((item) => [keyString(item), item]));
}

/** The completions of one instance still to be committed, and its head as last read. */
interface InstanceRun {
  instanceId: string;
  head: Head | undefined;
  open: Completing[];
}

/**
 * The completions of one instance. Each round judges the open ones on what was read and sends
 * the first cut of the others. A cancelled transaction applied nothing: the head, the claims and
 * the result items are read again and the round repeats (a lost race: up to RACE_ATTEMPTS). A
 * completion whose claim is found tombstoned with its own nonce was committed by an earlier send
 * whose response never arrived (the adapter resends on a transaction conflict).
 */
async function completeOn(ctx: Context, run: InstanceRun, call: CompletionCall): Promise<void> {
  let lostRace = false;
  await retryOnRace(
    `completeTasks on ${quote(run.instanceId)}`,
    async () => {
      for (;;) {
        const now = ctx.now();
        const batch = judge(run, now, call);
        if (batch === undefined) return undefined;
        if (lostRace) {
          lostRace = false;
          return RETRY;
        }
        lostRace = !(await sendBatch(ctx, run, batch, now, call));
      }
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * Judges the open completions on what was read, in saveTaskResult's order (resultRefusal: no
 * head, then the claim not held with that token or expired on our clock, then finished); the
 * refused ones get their outcome and leave. Returns the first cut of the rest, if any.
 */
function judge(run: InstanceRun, now: number, call: CompletionCall): Completing[] | undefined {
  const view = { found: run.head !== undefined, finished: run.head?.finished ?? false, now };
  run.open = run.open.filter((item) => {
    const claim = heldView(parseClaim(item.claim));
    const outcome = resultRefusal(run.instanceId, item.c, { ...view, claim });
    if (outcome !== null) call.outcomes[item.index] = outcome;
    return outcome === null;
  });
  if (run.head === undefined) return undefined;
  return cut(run.open, (item) => inlineBytes(item.ref as ValueRef))[0];
}

/** Sends one cut. True: it landed; false: cancelled by a lost race (the items are read again). */
async function sendBatch(
  ctx: Context,
  run: InstanceRun,
  batch: Completing[],
  now: number,
  call: CompletionCall,
): Promise<boolean> {
  const head = run.head as Head;
  const entries = batch.map(
    (item): Entry => ({
      taskId: item.c.taskId,
      token: item.c.token,
      nonce: item.nonce,
      ref: item.ref as ValueRef,
      prior: item.prior ?? { kind: "none" },
    }),
  );
  const tx = completionTransaction({
    tableName: ctx.tableName,
    layout: ctx.layout,
    head,
    entries,
    now,
    tombstoneTtl: tombstoneTtl(now),
  });
  for (const item of batch) call.kept.add(item);
  try {
    await ctx.send(
      () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: tx.items }),
    );
  } catch (error) {
    const reasons = cancellationReasons(error);
    // No cancellation: the outcome is unknown, the chunks stay (cleanup() collects orphans).
    if (reasons === undefined) throw error;
    for (const item of batch) call.kept.delete(item);
    if (isConflictOnly(error)) throw error;
    if (!reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      throw error;
    await reread(ctx, run, head, call);
    return false;
  }
  landed(run, batch, call);
  const waitDone = tx.after.awaiting === undefined;
  run.head = {
    ...head,
    ...tx.after,
    awaiting: waitDone ? undefined : head.awaiting,
    timer: waitDone ? false : head.timer,
    leaseSk: tx.after.leaseSk,
    lastCompletedTaskId: batch[batch.length - 1]?.c.taskId,
  };
  return true;
}

/** Completions that committed: success, and the chunks of the results they replaced are garbage. */
function landed(run: InstanceRun, items: readonly Completing[], call: CompletionCall): void {
  for (const item of items) {
    call.kept.add(item);
    call.outcomes[item.index] = null;
    if (item.replacing !== undefined) call.replaced.push(item.replacing);
  }
  const done = new Set(items);
  run.open = run.open.filter((item) => !done.has(item));
}

/**
 * After a cancelled transaction: reads the head, the open completions' claim items and their
 * result items (under the generation sent) again. A claim tombstoned with a completion's own
 * nonce means that completion committed unseen: it has landed.
 */
async function reread(ctx: Context, run: InstanceRun, sent: Head, call: CompletionCall): Promise<void> {
  const { layout } = ctx;
  const items = await readForCompletion(ctx, run.open, new Map([[sent.pk, sent.generation]]));
  run.head = parseHead(layout, items.get(keyString(layout.headKey(sent.pk))), run.instanceId);
  const committed: Completing[] = [];
  for (const item of run.open) {
    item.claim = items.get(keyString(layout.claimKey(item.pk, item.c.taskId)));
    const claim = parseClaim(item.claim);
    if (
      claim?.token === item.c.token &&
      claim.workerId === undefined &&
      str(item.claim, ATTR.completedBy) === item.nonce
    ) {
      committed.push(item);
      continue;
    }
    const result = items.get(keyString(layout.resultKey(item.pk, sent.generation, item.c.taskId)));
    const ref =
      result === undefined || run.head?.generation !== sent.generation ? undefined : readRef(result);
    item.prior = priorOf(ref);
    item.replacing = chunkSetOf(ref);
  }
  landed(run, committed, call);
}
