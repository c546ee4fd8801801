/*
 * The finish time and purgeFinished. A head that finishes (saveSnapshot of a terminal state, a
 * completeTasks step to Completed or Failed, cancelWorkflow) gets `fin`, the backend's clock at
 * that write, and the keys of the sparse "finished" index (FPK/FSK), in the same conditional write
 * that finishes it; a terminal -> terminal save keeps them. purgeFinished reads that index, oldest
 * finish first across its shards, and deletes each workflow as deleteSnapshot does.
 */
import {
  type AttributeValue,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  ScanCommand,
  type ScanCommandOutput,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type { Context } from "./context.js";
import { deleteInstance } from "./deletion.js";
import { expressions, type Item, isConditionFailed, N, num, S, str } from "./dynamo.js";
import { getHead, type Head } from "./items.js";
import { ATTR, FINISHED_INDEX, HEAD_SK, type Layout, names, STATUS } from "./layout.js";

/** The head attributes of a workflow finished at `at`: the finish time and its index keys. */
export function finishAttributes(layout: Layout, instanceId: string, at: number): Item {
  return {
    [ATTR.finishedAt]: N(at),
    [ATTR.finishedPk]: S(layout.finishedPk(layout.shardOf(instanceId))),
    [ATTR.finishedSk]: S(layout.finishedSk(at, instanceId)),
  };
}

/**
 * The finish time a save of a terminal state writes over `previous`: the one it already has when
 * it was finished (a finished head no migration reached: its updatedAt, the migration's estimate),
 * else now (a first finish, or a new life after a delete).
 */
export function finishTimeOfSave(previous: Head | undefined, now: number): number {
  if (previous?.finished === true) return previous.finishedAt ?? previous.updatedAt;
  return now;
}

/** SET clauses (and values) that give an in-progress head being finished at `at` its finish time. */
export function finishClauses(
  layout: Layout,
  instanceId: string,
  at: number,
): { set: string[]; values: Record<string, AttributeValue> } {
  const attributes = finishAttributes(layout, instanceId, at);
  const set: string[] = [];
  const values: Record<string, AttributeValue> = {};
  for (const [name, value] of Object.entries(attributes)) {
    set.push(`#${name} = :f_${name}`);
    values[`:f_${name}`] = value;
  }
  return { set, values };
}

/** How many deletions of one purge call run at once. */
const PURGE_CONCURRENCY = 8;
/** Index entries read per query of one shard (a purge reads at most limit + shards x this). */
const PAGE = 100;

/**
 * purgeFinished: the finished index's entries before the cut-off, merged oldest first across the
 * shards, each re-checked on its head (read strongly consistent: the index is eventually
 * consistent, an entry may be stale) and deleted as deleteSnapshot does, conditioned on the
 * generation read. Only what this call deleted is counted: a head gone or re-created meanwhile,
 * or deleted by a concurrent purge, is not.
 */
export async function purgeFinished(ctx: Context, before: number, limit: number): Promise<number> {
  const feed = new FinishedFeed(ctx, before);
  const seen = new Set<string>();
  let deleted = 0;
  for (;;) {
    const batch: string[] = [];
    while (batch.length < Math.min(limit - deleted, PURGE_CONCURRENCY)) {
      const id = await feed.next();
      if (id === undefined) break;
      // A stale entry and the current one of the same instance: one look is enough.
      if (seen.has(id)) continue;
      seen.add(id);
      batch.push(id);
    }
    if (batch.length === 0) return deleted;
    const outcomes = await Promise.all(batch.map((id) => purgeOne(ctx, id, before)));
    deleted += outcomes.filter(Boolean).length;
    if (deleted >= limit) return deleted;
  }
}

/** Deletes the instance if its head (read now) finished before `before`; true when this call did. */
async function purgeOne(ctx: Context, instanceId: string, before: number): Promise<boolean> {
  const head = await getHead(ctx, instanceId);
  const eligible = (h: Head): boolean => h.finished && h.finishedAt !== undefined && h.finishedAt < before;
  if (head === undefined || !eligible(head)) return false;
  return deleteInstance(ctx, head, eligible);
}

/** One shard's entries being read: what is buffered and where its next page starts. */
interface Shard {
  pk: string;
  buffer: Array<{ sk: string; instanceId: string }>;
  startKey: Record<string, AttributeValue> | undefined;
  done: boolean;
}

/** The finished index's entries before a cut-off, oldest first across the shards (a k-way merge). */
class FinishedFeed {
  readonly #shards: Shard[];
  readonly #cut: string;

  constructor(
    private readonly ctx: Context,
    before: number,
  ) {
    this.#cut = ctx.layout.finishedCut(before);
    this.#shards = Array.from({ length: ctx.layout.shards }, (_, shard) => ({
      pk: ctx.layout.finishedPk(shard),
      buffer: [],
      startKey: undefined,
      done: false,
    }));
  }

  /** The instance id of the next entry, or undefined when none is left. */
  async next(): Promise<string | undefined> {
    await Promise.all(this.#shards.filter((s) => s.buffer.length === 0 && !s.done).map((s) => this.#fill(s)));
    let first: Shard | undefined;
    for (const shard of this.#shards) {
      const head = shard.buffer[0];
      if (head !== undefined && (first === undefined || head.sk < (first.buffer[0]?.sk ?? ""))) first = shard;
    }
    return first?.buffer.shift()?.instanceId;
  }

  async #fill(shard: Shard): Promise<void> {
    const out = await this.ctx.send<QueryCommandOutput>(
      new QueryCommand({
        TableName: this.ctx.tableName,
        IndexName: FINISHED_INDEX,
        Limit: PAGE,
        ExclusiveStartKey: shard.startKey,
        ...expressions(
          {
            KeyConditionExpression: `#${ATTR.finishedPk} = :fpk AND #${ATTR.finishedSk} < :cut`,
            ProjectionExpression: names(ATTR.finishedSk, ATTR.instanceId),
          },
          { ":fpk": S(shard.pk), ":cut": S(this.#cut) },
        ),
      }),
    );
    for (const item of out.Items ?? []) {
      const sk = str(item, ATTR.finishedSk);
      const instanceId = str(item, ATTR.instanceId);
      if (sk !== undefined && instanceId !== undefined) shard.buffer.push({ sk, instanceId });
    }
    shard.startKey = out.LastEvaluatedKey;
    shard.done = shard.startKey === undefined;
  }
}

/** The name of the backfill's migration mark. */
const BACKFILL = "finish-times";
/** How many heads of a scanned page the backfill updates at once. */
const BACKFILL_CONCURRENCY = 16;

/**
 * The migration pass of version 3: every finished head of this key prefix without a finish time
 * gets its updatedAt as one (the best estimate there is) and the finished index's keys. Paged
 * (a strongly consistent scan), each update conditioned on the head being unchanged, so it is
 * idempotent and safe beside live writers; a mark records that it completed, and later calls
 * skip the scan. Returns how many heads it updated.
 */
export async function backfillFinishTimes(ctx: Context): Promise<number> {
  const mark = ctx.layout.migrationKey(BACKFILL);
  const done = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({ TableName: ctx.tableName, Key: mark, ConsistentRead: true }),
  );
  if (done.Item !== undefined) return 0;
  let updated = 0;
  let startKey: Record<string, AttributeValue> | undefined;
  do {
    const out: ScanCommandOutput = await ctx.send(
      new ScanCommand({
        TableName: ctx.tableName,
        ExclusiveStartKey: startKey,
        ConsistentRead: true,
        ...expressions(
          {
            FilterExpression:
              `begins_with(#${ATTR.pk}, :base) AND #${ATTR.sk} = :h AND #${ATTR.status} = :F AND ` +
              `attribute_not_exists(#${ATTR.finishedAt})`,
            ProjectionExpression: names(ATTR.pk, ATTR.instanceId, ATTR.generation, ATTR.updatedAt),
          },
          { ":base": S(ctx.layout.base), ":h": S(HEAD_SK), ":F": S(STATUS.finished) },
        ),
      }),
    );
    startKey = out.LastEvaluatedKey;
    const heads = out.Items ?? [];
    for (let i = 0; i < heads.length; i += BACKFILL_CONCURRENCY) {
      const batch = heads.slice(i, i + BACKFILL_CONCURRENCY);
      const landed = await Promise.all(batch.map((h) => backfillOne(ctx, h)));
      updated += landed.filter(Boolean).length;
    }
  } while (startKey !== undefined);
  await ctx.send(
    new PutItemCommand({
      TableName: ctx.tableName,
      Item: { ...mark, [ATTR.writtenAt]: N(ctx.now()) },
    }),
  );
  return updated;
}

/** One head's finish time from its updatedAt, unless it changed since the scan (then: as it is). */
async function backfillOne(ctx: Context, item: Item): Promise<boolean> {
  const instanceId = str(item, ATTR.instanceId);
  const generation = str(item, ATTR.generation);
  if (instanceId === undefined || generation === undefined) return false;
  const { set, values } = finishClauses(ctx.layout, instanceId, num(item, ATTR.updatedAt) ?? 0);
  try {
    await ctx.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.headKey(str(item, ATTR.pk) as string),
        ...expressions(
          {
            UpdateExpression: `SET ${set.join(", ")}`,
            ConditionExpression:
              `#${ATTR.generation} = :gen AND #${ATTR.status} = :F AND ` +
              `attribute_not_exists(#${ATTR.finishedAt})`,
          },
          { ...values, ":gen": S(generation), ":F": S(STATUS.finished) },
        ),
      }),
    );
    return true;
  } catch (error) {
    // Saved, deleted or given its finish time meanwhile: that write decided.
    if (isConditionFailed(error)) return false;
    throw error;
  }
}
