/*
 * findAvailableTasks and claimAvailableTasks (claim-next): the shards of the sparse ready index,
 * and the leases that have ended, merged into (updatedAt, instance id) order; every candidate
 * verified on the base table (the index is eventually consistent), then claimed through tryClaim.
 */
import {
  type AttributeValue,
  GetItemCommand,
  QueryCommand,
  type QueryCommandOutput,
} from "@aws-sdk/client-dynamodb";
import { type AvailableTask, type ClaimedTask, compareIds, EMPTY_BYTES } from "@sayiir/persistence-core";
import { fromStoredParts } from "@sayiir/persistence-core/adapter";
import { MissingChunkError, readRef } from "./chunks.js";
import { leaseEnd, moveLease, readyEntry, tryClaim } from "./claims.js";
import { type Context, quietly } from "./context.js";
import { batchGet, expressions, type Item, num, queryAll, S, str } from "./dynamo.js";
import { type Head, liveForOthers, parseClaim, parseHead } from "./items.js";
import { ATTR, keyString, READY_INDEX } from "./layout.js";

interface Candidate {
  pk: string;
  instanceId: string;
  taskId: string;
  updatedAt: number;
  /** Found in the leased partition (a lease that has ended): its lease sort key. */
  leaseSk?: string;
}

/** A candidate that survived verification, with its head as read. */
interface Verified {
  candidate: Candidate;
  head: Head;
}

type Page = Pick<QueryCommandOutput, "Items" | "LastEvaluatedKey">;

/** One shard of the ready index, read page by page in (updatedAt, instance id) order. */
class ShardCursor {
  buffer: Candidate[] = [];
  #startKey: Record<string, AttributeValue> | undefined;
  #done = false;
  constructor(
    private readonly fetch: (startKey: Record<string, AttributeValue> | undefined) => Promise<Page>,
    private readonly leased = false,
  ) {}

  async fill(): Promise<void> {
    while (this.buffer.length === 0 && !this.#done) {
      const out = await this.fetch(this.#startKey);
      this.#startKey = out.LastEvaluatedKey;
      if (this.#startKey === undefined) this.#done = true;
      for (const item of out.Items ?? []) {
        const instanceId = str(item, ATTR.instanceId);
        const taskId = str(item, ATTR.position);
        const updatedAt = num(item, ATTR.updatedAt);
        const pk = str(item, ATTR.pk);
        if (instanceId !== undefined && taskId !== undefined && updatedAt !== undefined && pk !== undefined) {
          const candidate: Candidate = { pk, instanceId, taskId, updatedAt };
          const leaseSk = str(item, ATTR.readySk);
          if (this.leased && leaseSk !== undefined) candidate.leaseSk = leaseSk;
          this.buffer.push(candidate);
        }
      }
    }
  }
}

/** Index order: updatedAt, then instance id in code point (UTF-8 byte) order, as the index sorts. */
const before = (a: Candidate, b: Candidate): boolean =>
  a.updatedAt < b.updatedAt || (a.updatedAt === b.updatedAt && compareIds(a.instanceId, b.instanceId) < 0);

/** A page of one shard's ready partition. */
function readyShard(ctx: Context, shard: number, pageSize: number): ShardCursor {
  return new ShardCursor((startKey) =>
    ctx.send<QueryCommandOutput>(
      new QueryCommand({
        TableName: ctx.tableName,
        IndexName: READY_INDEX,
        Limit: pageSize,
        ExclusiveStartKey: startKey,
        ...expressions(
          { KeyConditionExpression: `#${ATTR.readyPk} = :gpk` },
          { ":gpk": S(ctx.layout.readyPk(shard)) },
        ),
      }),
    ),
  );
}

/**
 * Leases that have ended (expiresAt + skew budget passed on our clock) are ready again: all of
 * them, from every shard's leased partition, in (updatedAt, instance id) order, as one cursor.
 */
function endedLeases(ctx: Context): ShardCursor {
  const cut = ctx.layout.leaseSk(ctx.now() + 1, "");
  return new ShardCursor(async () => {
    const lists = await Promise.all(
      Array.from({ length: ctx.layout.shards }, (_, shard) =>
        queryAll(ctx.send, {
          TableName: ctx.tableName,
          IndexName: READY_INDEX,
          ...expressions(
            { KeyConditionExpression: `#${ATTR.readyPk} = :kpk AND #${ATTR.readySk} < :cut` },
            { ":kpk": S(ctx.layout.leasedPk(shard)), ":cut": S(cut) },
          ),
        }),
      ),
    );
    const items = lists.flat();
    const key = (item: Item) => ({
      updatedAt: num(item, ATTR.updatedAt) ?? 0,
      instanceId: str(item, ATTR.instanceId) ?? "",
    });
    items.sort((a, b) => {
      const x = key(a);
      const y = key(b);
      return x.updatedAt - y.updatedAt || compareIds(x.instanceId, y.instanceId);
    });
    return { Items: items };
  }, true);
}

/** Ready-index candidates of every shard, merged into (updatedAt, instance id) order. */
async function* candidates(ctx: Context, pageSize: number): AsyncGenerator<Candidate, void, undefined> {
  const cursors = Array.from({ length: ctx.layout.shards }, (_, shard) => readyShard(ctx, shard, pageSize));
  cursors.push(endedLeases(ctx));
  for (;;) {
    await Promise.all(cursors.map((c) => c.fill()));
    let best: ShardCursor | undefined;
    for (const c of cursors) {
      const head = c.buffer[0];
      if (head !== undefined && (best === undefined || before(head, best.buffer[0] as Candidate))) best = c;
    }
    if (best === undefined) return;
    yield best.buffer.shift() as Candidate;
  }
}

/**
 * Ready tasks in index order, verified on the base table (the index is eventually consistent):
 * the head still ready at that task, and no claim another worker must respect.
 */
async function* verified(ctx: Context, pageSize: number): AsyncGenerator<Verified[], void, undefined> {
  const batchSize = Math.min(pageSize, 50);
  let batch: Candidate[] = [];
  const seen = new Set<string>();
  for await (const candidate of candidates(ctx, Math.min(Math.max(pageSize, 10), 200))) {
    if (seen.has(candidate.pk)) continue;
    seen.add(candidate.pk);
    batch.push(candidate);
    if (batch.length >= batchSize) {
      yield await verify(ctx, batch);
      batch = [];
    }
  }
  if (batch.length > 0) yield await verify(ctx, batch);
}

/** Reads the heads and claims of a batch of candidates and keeps those still ready and unclaimed. */
async function verify(ctx: Context, batch: Candidate[]): Promise<Verified[]> {
  const { layout } = ctx;
  const keys = batch.flatMap((c) => [layout.headKey(c.pk), layout.claimKey(c.pk, c.taskId)]);
  const items = await batchGet(ctx.client, ctx.tableName, keys, 100, 2);
  const byKey = new Map(items.map((item) => [keyString(item), item]));
  const now = ctx.now();
  const out: Verified[] = [];
  const repairs: Array<Promise<void>> = [];
  for (const c of batch) {
    const headItem = byKey.get(keyString(layout.headKey(c.pk)));
    if (headItem === undefined || str(headItem, ATTR.instanceId) !== c.instanceId) continue;
    const head = parseHead(layout, headItem, c.instanceId) as Head;
    if (!head.ready || head.finished || head.positionTaskId !== c.taskId) continue;
    const claim = parseClaim(byKey.get(keyString(layout.claimKey(c.pk, c.taskId))));
    const live = liveForOthers(ctx, claim, now);
    // An ended lease: back to the ready partition; a renewed one (extend, or taken over by
    // claimTask): re-keyed to when the live claim ends. Both conditional on the lease read.
    if (c.leaseSk !== undefined && head.leaseSk === c.leaseSk) {
      const to = live
        ? {
            pk: layout.leasedPk(layout.shardOf(c.instanceId)),
            sk: layout.leaseSk(leaseEnd(ctx, claim?.expiresAt), c.instanceId),
          }
        : readyEntry(ctx, head);
      if (to.sk !== c.leaseSk || !live) repairs.push(quietly(() => moveLease(ctx, head, to)));
    }
    if (live) continue;
    out.push({ candidate: c, head });
  }
  await Promise.all(repairs);
  return out;
}

/**
 * The input of a ready task: the last completed task's output, else the initial input (a value of
 * its own, or inside the header of a head written before it was split out), else empty.
 * undefined: a value was replaced under the reader (the task is skipped).
 */
async function taskInput(ctx: Context, head: Head): Promise<Uint8Array | undefined> {
  let ref = head.input;
  if (head.lastCompletedTaskId !== undefined) {
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

export async function findAvailableTasks(ctx: Context, limit: number): Promise<AvailableTask[]> {
  const found: AvailableTask[] = [];
  for await (const batch of verified(ctx, limit)) {
    const inputs = await Promise.all(batch.map(({ head }) => taskInput(ctx, head)));
    for (const [i, { candidate, head }] of batch.entries()) {
      const input = inputs[i];
      if (input === undefined || found.length >= limit) continue;
      found.push({
        instanceId: candidate.instanceId,
        taskId: candidate.taskId,
        input,
        workflowDefinitionHash: head.definitionHash,
      });
    }
    if (found.length >= limit) break;
  }
  return found;
}

/**
 * Claim-next: verified candidates claimed concurrently, a batch at a time, until `limit`. The
 * claims of one batch are settled one by one: if some fail, the call still returns the tasks it
 * did claim (a claim without ttl would otherwise never be given back) and fails only when it
 * claimed nothing.
 */
export async function claimAvailableTasks(
  ctx: Context,
  workerId: string,
  limit: number,
  ttlMs: number | null,
): Promise<ClaimedTask[]> {
  const claimed: ClaimedTask[] = [];
  let failure: { reason: unknown } | undefined;
  try {
    for await (const batch of verified(ctx, limit)) {
      let pending = batch;
      while (pending.length > 0 && claimed.length < limit) {
        const take = pending.slice(0, limit - claimed.length);
        pending = pending.slice(take.length);
        const got = await Promise.allSettled(take.map((v) => claimOne(ctx, v, workerId, ttlMs)));
        for (const result of got) {
          if (result.status === "rejected") failure ??= { reason: result.reason };
          else if (result.value !== undefined) claimed.push(result.value);
        }
        if (failure !== undefined) break;
      }
      if (claimed.length >= limit || failure !== undefined) break;
    }
  } catch (error) {
    // Discovery itself failed (after earlier batches may have claimed): same rule.
    failure ??= { reason: error };
  }
  if (failure !== undefined && claimed.length === 0) throw failure.reason;
  return claimed;
}

/** Claims one verified task against the head read (the input returned is the one claimed). */
async function claimOne(
  ctx: Context,
  { candidate, head }: Verified,
  workerId: string,
  ttlMs: number | null,
): Promise<ClaimedTask | undefined> {
  const input = await taskInput(ctx, head);
  if (input === undefined) return undefined;
  const claim = await tryClaim(ctx, candidate.instanceId, candidate.taskId, workerId, ttlMs, head);
  if (claim === null) return undefined;
  return {
    instanceId: candidate.instanceId,
    taskId: candidate.taskId,
    input,
    workflowDefinitionHash: head.definitionHash,
    claim,
  };
}
