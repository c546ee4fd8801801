/*
 * Discovery's candidates, per queue served: the shards of the sparse ready index (by discovery
 * key), the shards of the timer index from its start up to now (by due time, merged with the key
 * of that due time and the priority its sort key carries), and the leases that have ended (by
 * the key their task had before it was leased, read from its head), merged by key
 * (time, then instance id in code point order). They are only candidates: the indexes are
 * eventually consistent, so discovery.ts verifies each one on the base table.
 */
import { type AttributeValue, QueryCommand, type QueryCommandOutput } from "@aws-sdk/client-dynamodb";
import { compareIds } from "@sayiir/persistence-core";
import type { Context } from "./context.js";
import { expressions, type Item, N, num, queryAll, S, str } from "./dynamo.js";
import { oldestEvents } from "./events.js";
import { getHead } from "./items.js";
import { ATTR, type Layout, READY_INDEX, TIMER_INDEX } from "./layout.js";
import { homeOf } from "./readiness.js";

/** Where a candidate was found: the ready partition, the leased partition, or the timer index. */
export type Source = "ready" | "leased" | "timer";

export interface Candidate {
  pk: string;
  instanceId: string;
  taskId: string;
  /** Its discovery key (see Layout.readySk). */
  time: number;
  source: Source;
  /** Found in the leased partition (a lease that has ended): its lease sort key. */
  leaseSk?: string;
}

/** The most urgent priority: the least key offset (-2 x agingMs) a timer entry can have. */
const MIN_PRIORITY = 1;

type Page = Pick<QueryCommandOutput, "Items" | "LastEvaluatedKey">;

/** A candidate's discovery key, from the index item of its source. */
function timeOf(layout: Layout, source: Source, item: Item): number | undefined {
  if (source === "leased") {
    const exact = num(item, HOME_KEY);
    if (exact !== undefined) return exact;
    const updatedAt = num(item, ATTR.updatedAt);
    return updatedAt === undefined ? undefined : layout.discoveryKey(updatedAt, 3);
  }
  const sk = str(item, source === "ready" ? ATTR.readySk : ATTR.timerSk);
  if (sk === undefined) return undefined;
  if (source === "ready") return layout.timeOfSk(sk);
  const { due, priority } = layout.parseTimerSk(sk);
  return layout.discoveryKey(due, priority);
}

/** One partition of an index, read page by page in (time, instance id) order. */
class ShardCursor {
  buffer: Candidate[] = [];
  #startKey: Record<string, AttributeValue> | undefined;
  #done = false;
  constructor(
    private readonly fetch: (startKey: Record<string, AttributeValue> | undefined) => Promise<Page>,
    private readonly source: Source,
    private readonly layout: Layout,
  ) {}

  /** Timer partition: the largest due time read so far (the partition is read in due order). */
  #lastDue = Number.NEGATIVE_INFINITY;

  /**
   * Reads pages until the buffer's head is the partition's next candidate in key order. The ready
   * and leased partitions are read in key order: one non-empty page will do. A timer partition is
   * read in due order while its key is effectiveTime(due, priority): an unread entry (due >= the
   * last due read) can still move ahead of the buffered head by up to 2 x agingMs (priority 1), so
   * reading goes on until the head's key is below the least key an unread entry can have.
   */
  async fill(): Promise<void> {
    while (!this.#done && (this.buffer.length === 0 || this.#overtakable())) {
      const out = await this.fetch(this.#startKey);
      this.#startKey = out.LastEvaluatedKey;
      if (this.#startKey === undefined) this.#done = true;
      for (const item of out.Items ?? []) {
        const candidate = this.#parse(item);
        if (candidate !== undefined) this.buffer.push(candidate);
        if (this.source === "timer") this.#noteDue(item);
      }
      if (this.source === "timer") this.buffer.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
    }
  }

  #noteDue(item: Item): void {
    const sk = str(item, ATTR.timerSk);
    if (sk !== undefined) this.#lastDue = Math.max(this.#lastDue, this.layout.parseTimerSk(sk).due);
  }

  /** Could an unread timer entry still come before the buffered head (ties included)? */
  #overtakable(): boolean {
    if (this.source !== "timer") return false;
    const head = this.buffer[0] as Candidate;
    return head.time >= this.layout.discoveryKey(this.#lastDue, MIN_PRIORITY);
  }

  #parse(item: Item): Candidate | undefined {
    const instanceId = str(item, ATTR.instanceId);
    const taskId = str(item, ATTR.position);
    const time = timeOf(this.layout, this.source, item);
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
function readyShard(ctx: Context, queue: string, shard: number, pageSize: number): ShardCursor {
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
            { ":gpk": S(ctx.layout.readyPk(shard, queue)) },
          ),
        }),
      ),
    "ready",
    ctx.layout,
  );
}

/** A page of one shard's timer partition, from its start up to `cut` (timeoutAt <= now). */
function timerShard(ctx: Context, queue: string, shard: number, pageSize: number, cut: string): ShardCursor {
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
            { ":tpk": S(ctx.layout.timerPk(shard, queue)), ":cut": S(cut) },
          ),
        }),
      ),
    "timer",
    ctx.layout,
  );
}

/** Not a table attribute: the discovery key endedLeases computes for a leased item. */
const HOME_KEY = "sayiir:home-key";

/**
 * The discovery key an ended lease's task had before it was leased: that of the entry its head
 * goes back to (its runAt or retryAt, a wait's timeout, its priority), read from the head (and the
 * wait's events). The index item carries only updatedAt: ordering by it would serve a timed-out
 * wait or an urgent task later than its turn. Ended leases are few (crashed workers): one read each.
 */
async function homeKey(ctx: Context, item: Item, now: number): Promise<number | undefined> {
  const instanceId = str(item, ATTR.instanceId);
  if (instanceId === undefined) return undefined;
  const head = await getHead(ctx, instanceId);
  if (head === undefined) return undefined;
  const wait = head.awaiting;
  const eventPending = wait !== undefined && (await oldestEvents(ctx, head, wait.eventName)).length > 0;
  const entry = homeOf(ctx.layout, head, eventPending, now);
  if (entry === undefined) return undefined;
  if (entry.index === "ready") return ctx.layout.timeOfSk(entry.sk);
  const { due, priority } = ctx.layout.parseTimerSk(entry.sk);
  return ctx.layout.discoveryKey(due, priority);
}

/**
 * Leases that have ended (expiresAt + skew budget passed on our clock) are ready again: all of
 * them, from every shard's leased partition, in the order of the discovery key their task had
 * before it was leased (homeKey; updatedAt at priority 3 when the head says nothing), as one cursor.
 */
function endedLeases(ctx: Context, queues: readonly string[], now: number): ShardCursor {
  const cut = ctx.layout.leaseSk(now + 1, "");
  const partitions = queues.flatMap((queue) =>
    Array.from({ length: ctx.layout.shards }, (_, shard) => ctx.layout.leasedPk(shard, queue)),
  );
  return new ShardCursor(
    async () => {
      const lists = await Promise.all(
        partitions.map((kpk) =>
          queryAll(ctx.send, {
            TableName: ctx.tableName,
            IndexName: READY_INDEX,
            ...expressions(
              { KeyConditionExpression: `#${ATTR.readyPk} = :kpk AND #${ATTR.readySk} < :cut` },
              { ":kpk": S(kpk), ":cut": S(cut) },
            ),
          }),
        ),
      );
      const items = lists.flat();
      await Promise.all(
        items.map(async (item) => {
          const exact = await homeKey(ctx, item, now);
          if (exact !== undefined) item[HOME_KEY] = N(exact);
        }),
      );
      const key = (item: Item) => ({
        time: timeOf(ctx.layout, "leased", item) ?? 0,
        instanceId: str(item, ATTR.instanceId) ?? "",
      });
      items.sort((a, b) => {
        const x = key(a);
        const y = key(b);
        return x.time - y.time || compareIds(x.instanceId, y.instanceId);
      });
      return { Items: items };
    },
    "leased",
    ctx.layout,
  );
}

/**
 * Candidates of every shard of both indexes and the ended leases, merged by key: the ready
 * partitions by updatedAt, the due timers by timeoutAt, ties by instance id.
 */
export async function* candidates(
  ctx: Context,
  pageSize: number,
  queues: readonly string[],
): AsyncGenerator<Candidate, void, undefined> {
  const now = ctx.now();
  const due = ctx.layout.timerCut(now);
  const shards = Array.from({ length: ctx.layout.shards }, (_, shard) => shard);
  const cursors = [
    ...queues.flatMap((queue) => shards.map((shard) => readyShard(ctx, queue, shard, pageSize))),
    ...queues.flatMap((queue) => shards.map((shard) => timerShard(ctx, queue, shard, pageSize, due))),
    endedLeases(ctx, queues, now),
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
