/*
 * Discovery's candidates: the shards of the sparse ready index (by updatedAt), the shards of the
 * timer index from its start up to now (by timeoutAt), and the leases that have ended, merged by
 * key (time, then instance id in code point order). They are only candidates: the indexes are
 * eventually consistent, so discovery.ts verifies each one on the base table.
 */
import { type AttributeValue, QueryCommand, type QueryCommandOutput } from "@aws-sdk/client-dynamodb";
import { compareIds } from "@sayiir/persistence-core";
import type { Context } from "./context.js";
import { expressions, type Item, num, queryAll, S, str } from "./dynamo.js";
import { ATTR, READY_INDEX, TIMER_INDEX } from "./layout.js";

/** Where a candidate was found: the ready partition, the leased partition, or the timer index. */
export type Source = "ready" | "leased" | "timer";

export interface Candidate {
  pk: string;
  instanceId: string;
  taskId: string;
  /** Its key's time: updatedAt (ready and leased partitions) or timeoutAt (timer index). */
  time: number;
  source: Source;
  /** Found in the leased partition (a lease that has ended): its lease sort key. */
  leaseSk?: string;
}

type Page = Pick<QueryCommandOutput, "Items" | "LastEvaluatedKey">;

/** The attribute holding a candidate's time, per source. */
const TIME_OF: Record<Source, string> = {
  ready: ATTR.updatedAt,
  leased: ATTR.updatedAt,
  timer: ATTR.timeoutAt,
};

/** One partition of an index, read page by page in (time, instance id) order. */
class ShardCursor {
  buffer: Candidate[] = [];
  #startKey: Record<string, AttributeValue> | undefined;
  #done = false;
  constructor(
    private readonly fetch: (startKey: Record<string, AttributeValue> | undefined) => Promise<Page>,
    private readonly source: Source,
  ) {}

  async fill(): Promise<void> {
    while (this.buffer.length === 0 && !this.#done) {
      const out = await this.fetch(this.#startKey);
      this.#startKey = out.LastEvaluatedKey;
      if (this.#startKey === undefined) this.#done = true;
      for (const item of out.Items ?? []) {
        const candidate = this.#parse(item);
        if (candidate !== undefined) this.buffer.push(candidate);
      }
    }
  }

  #parse(item: Item): Candidate | undefined {
    const instanceId = str(item, ATTR.instanceId);
    const taskId = str(item, ATTR.position);
    const time = num(item, TIME_OF[this.source]);
    const pk = str(item, ATTR.pk);
    if (instanceId === undefined || taskId === undefined || time === undefined || pk === undefined) return;
    const candidate: Candidate = { pk, instanceId, taskId, time, source: this.source };
    const leaseSk = str(item, ATTR.readySk);
    if (this.source === "leased" && leaseSk !== undefined) candidate.leaseSk = leaseSk;
    return candidate;
  }
}

/** Index order: time, then instance id in code point (UTF-8 byte) order, as the indexes sort. */
const before = (a: Candidate, b: Candidate): boolean =>
  a.time < b.time || (a.time === b.time && compareIds(a.instanceId, b.instanceId) < 0);

/** A page of one shard's ready partition. */
function readyShard(ctx: Context, shard: number, pageSize: number): ShardCursor {
  return new ShardCursor(
    (startKey) =>
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
    "ready",
  );
}

/** A page of one shard's timer partition, from its start up to `cut` (timeoutAt <= now). */
function timerShard(ctx: Context, shard: number, pageSize: number, cut: string): ShardCursor {
  return new ShardCursor(
    (startKey) =>
      ctx.send<QueryCommandOutput>(
        new QueryCommand({
          TableName: ctx.tableName,
          IndexName: TIMER_INDEX,
          Limit: pageSize,
          ExclusiveStartKey: startKey,
          ...expressions(
            { KeyConditionExpression: `#${ATTR.timerPk} = :tpk AND #${ATTR.timerSk} < :cut` },
            { ":tpk": S(ctx.layout.timerPk(shard)), ":cut": S(cut) },
          ),
        }),
      ),
    "timer",
  );
}

/**
 * Leases that have ended (expiresAt + skew budget passed on our clock) are ready again: all of
 * them, from every shard's leased partition, in (updatedAt, instance id) order, as one cursor.
 */
function endedLeases(ctx: Context, now: number): ShardCursor {
  const cut = ctx.layout.leaseSk(now + 1, "");
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
  }, "leased");
}

/**
 * Candidates of every shard of both indexes and the ended leases, merged by key: the ready
 * partitions by updatedAt, the due timers by timeoutAt, ties by instance id.
 */
export async function* candidates(
  ctx: Context,
  pageSize: number,
): AsyncGenerator<Candidate, void, undefined> {
  const now = ctx.now();
  const due = ctx.layout.timerSk(now + 1, "");
  const shards = Array.from({ length: ctx.layout.shards }, (_, shard) => shard);
  const cursors = [
    ...shards.map((shard) => readyShard(ctx, shard, pageSize)),
    ...shards.map((shard) => timerShard(ctx, shard, pageSize, due)),
    endedLeases(ctx, now),
  ];
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
