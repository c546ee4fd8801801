import type { AvailableTask, ClaimedTask, WakeProbe } from "@sayiir/persistence-core";
import type { ShardContext } from "./context.js";
import {
  byAge,
  type Candidate,
  decodeAvailable,
  decodeCandidates,
  decodeClaimed,
  decodeInputs,
  groupByShard,
  requestId,
  type Scored,
} from "./replies.js";

/*
 * findAvailableTasks and claimAvailableTasks over the ready sets of the queues served (one per
 * shard and queue), merged by score (readyAt + offset) then instance id. On a standalone
 * server (or with one shard) one script covers every shard and takes the global oldest itself.
 * On a cluster each script covers one shard (one slot): the client peeks at every shard, merges
 * the candidates by age and then works shard by shard.
 */

/** Rounds of a cluster's claim-next before it returns what it has (each loses races only to other workers). */
const CLAIM_ROUNDS = 8;

const withoutScore = ({ score: _score, ...task }: ClaimedTask & Scored): ClaimedTask => task;

/**
 * The oldest `limit` entries of each shard's ready set (one script per shard: a cluster), merged:
 * the exact global oldest first. `checked`: only tasks that are ready and unclaimed, with their
 * task ids (discovery); otherwise the entries as they are (claim-next: its claim scripts check).
 */
async function peekShards(
  ctx: ShardContext,
  operation: string,
  limit: number,
  checked: boolean,
  queues: readonly string[],
): Promise<Candidate[]> {
  const { layout } = ctx;
  const perShard = await Promise.all(
    layout.allShards().map(async (shard) => {
      const flat = (await ctx.call("peek", operation, [
        layout.ready(shard),
        layout.tagStart(),
        String(limit),
        checked ? "1" : "0",
        ...queueArgs(queues),
        String(shard),
      ])) as string[];
      return decodeCandidates(flat, shard, checked);
    }),
  );
  return perShard.flat().sort(byAge).slice(0, limit);
}

/** The queues of a shard script's ARGV: their count, then each. */
const queueArgs = (queues: readonly string[]): string[] => [String(queues.length), ...queues];

export async function findAvailableTasks(
  ctx: ShardContext,
  limit: number,
  queues: readonly string[],
): Promise<AvailableTask[]> {
  const { layout } = ctx;
  if (ctx.oneScript) {
    const flat = await ctx.call(
      "peek",
      "findAvailableTasks",
      [layout.ready(0), layout.tagStart(), String(limit), "2", ...queueArgs(queues), ...ctx.shardArgs],
      true,
    );
    return decodeAvailable(flat as Buffer[]);
  }
  const chosen = await peekShards(ctx, "findAvailableTasks", limit, true, queues);
  if (chosen.length === 0) return [];
  // Inputs only for the chosen ones (they can be MiBs each); a task that stopped being ready
  // between the two steps is left out.
  const found = new Map<string, AvailableTask>();
  await Promise.all(
    [...groupByShard(chosen)].map(async ([shard, group]) => {
      const flat = await ctx.call(
        "shardInputs",
        "findAvailableTasks",
        [layout.ready(shard), layout.base(shard), ...group.map((c) => c.instanceId)],
        true,
      );
      for (const task of decodeInputs(flat as Buffer[])) found.set(task.instanceId, task);
    }),
  );
  return chosen.flatMap((c) => found.get(c.instanceId) ?? []);
}

/** One claim-next script call over `shards` (one slot on a cluster): claims up to `count` of their oldest. */
async function claimNext(
  ctx: ShardContext,
  shards: readonly string[],
  count: number,
  workerId: string,
  ttlMs: number | null,
  queues: readonly string[],
): Promise<Array<ClaimedTask & Scored>> {
  const req = requestId();
  const flat = await ctx.call(
    "claimNext",
    "claimAvailableTasks",
    [
      ctx.layout.request(shards[0] as string, req),
      ctx.layout.tagStart(),
      String(count),
      workerId,
      ttlMs === null ? "" : String(ttlMs),
      req,
      ctx.recordTtlMs,
      ...queueArgs(queues),
      ...shards,
    ],
    true,
  );
  return decodeClaimed(flat as Buffer[], workerId);
}

export async function claimAvailableTasks(
  ctx: ShardContext,
  workerId: string,
  limit: number,
  ttlMs: number | null,
  queues: readonly string[],
): Promise<ClaimedTask[]> {
  if (ctx.oneScript) {
    // One atomic script over every shard: it takes the global oldest at that instant, so there
    // is no race to lose and nothing to merge.
    return (await claimNext(ctx, ctx.shardArgs, limit, workerId, ttlMs, queues)).map(withoutScore);
  }
  const claimed: Array<ClaimedTask & Scored> = [];
  // A cluster: each round picks the globally oldest candidates (a peek per shard), then claims
  // as many in each of their shards atomically (the shard script takes the oldest unclaimed
  // ones at that instant). A round that loses every race to other workers is retried a few
  // times. Claims that landed are always returned: a failure (of a shard, or of a later round)
  // is thrown only when nothing was claimed, since a claim the caller never hears of is held
  // until it expires (forever without ttl).
  for (let round = 0; round < CLAIM_ROUNDS && claimed.length < limit; round++) {
    let candidates: Candidate[];
    try {
      candidates = await peekShards(ctx, "claimAvailableTasks", limit - claimed.length, false, queues);
    } catch (error) {
      if (claimed.length > 0) break;
      throw error;
    }
    if (candidates.length === 0) break;
    const settled = await Promise.allSettled(
      [...groupByShard(candidates)].map(([shard, group]) =>
        claimNext(ctx, [String(shard)], group.length, workerId, ttlMs, queues),
      ),
    );
    let failure: { reason: unknown } | undefined;
    for (const outcome of settled) {
      if (outcome.status === "fulfilled") claimed.push(...outcome.value);
      else failure ??= outcome;
    }
    if (failure !== undefined) {
      if (claimed.length > 0) break;
      throw failure.reason;
    }
  }
  return claimed.sort(byAge).map(withoutScore);
}

/**
 * waitForTasks' look (the probeWakeUp script, read-only): one script over every shard on a
 * standalone server, one per shard on a cluster, merged here (ready anywhere; the earliest due).
 */
export async function probeWakeUp(ctx: ShardContext, queues: readonly string[]): Promise<WakeProbe> {
  const { layout } = ctx;
  const groups = ctx.oneScript ? [ctx.shardArgs] : ctx.shardArgs.map((shard) => [shard]);
  const replies = await Promise.all(
    groups.map(
      (shards) =>
        ctx.call("probeWakeUp", "waitForTasks", [
          layout.ready(Number(shards[0])),
          layout.tagStart(),
          ...queueArgs(queues),
          ...shards,
        ]) as Promise<[string, string, string]>,
    ),
  );
  // Due times are on the server's clock: the hub sleeps from the server's now, not this process's.
  let nextDueAt: number | null = null;
  let now = Number.POSITIVE_INFINITY;
  for (const [ready, due, serverNow] of replies) {
    if (ready === "1") return { ready: true, nextDueAt: null };
    if (due !== "" && (nextDueAt === null || Number(due) < nextDueAt)) nextDueAt = Number(due);
    now = Math.min(now, Number(serverNow));
  }
  return { ready: false, nextDueAt, ...(Number.isFinite(now) ? { now } : {}) };
}
