import { BackendError, compareIds } from "@sayiir/persistence-core";
import type { ShardContext } from "./context.js";
import { groupByShard, str } from "./replies.js";

/*
 * purgeFinished over the finish-time index: one sorted set per shard, `{P:K}:done` (score = the
 * finish time by Redis's clock, member = the instance id), kept by the scripts that finish
 * (saveSnapshot of a terminal state, a step to Completed or Failed, cancel) and delete
 * instances. Unfinished workflows are never in it, so a purge costs what it deletes.
 *
 * A purge call is rounds of a read and a write. The read (peekFinished) takes the oldest entries
 * before the cut-off of every shard (one script on a standalone server, one per shard on a
 * cluster); their merge by (finish time, id) gives the oldest of the whole store, since each
 * shard gave at least as many as the round wants. The write (purgeFinished) deletes the picks,
 * oldest first, each atomically inside a script of its shard's slot, judging each again as it
 * stands then: an instance another client purged or deleted meanwhile is not in the index any
 * more and is not counted, so two purges never both count one workflow. Picks lost that way
 * make the call read again, so a call still deletes up to `limit` while others purge too.
 */

/** Index entries read per shard and round: a round deletes at most this many. */
const ROUND = 500;
/** Instances deleted per script: bounds how long one script holds the Redis thread. */
const BATCH = 100;
/** Rounds that may lose picks to other purgers before the call settles for what it deleted. */
const LOST_ROUNDS = 10;
/** Ids walked per migration script. */
const INDEX_PAGE = 500;

interface Pick {
  shard: number;
  instanceId: string;
  at: number;
}

export async function purgeFinished(ctx: ShardContext, before: number, limit: number): Promise<number> {
  let deleted = 0;
  let lostRounds = 0;
  while (deleted < limit) {
    const want = Math.min(limit - deleted, ROUND);
    const picks = (await peek(ctx, before, want)).slice(0, want);
    if (picks.length === 0) break;
    const count = await drop(ctx, picks, before);
    deleted += count;
    if (count < picks.length) {
      // Another client purged some of these meanwhile: read again (a bounded number of times).
      if (++lostRounds > LOST_ROUNDS) break;
    } else if (picks.length < want) {
      break;
    }
  }
  return deleted;
}

/** The oldest entries finished before `before` of every shard, merged oldest first (ties by id). */
async function peek(ctx: ShardContext, before: number, want: number): Promise<Pick[]> {
  const groups = ctx.oneScript ? [ctx.layout.allShards()] : ctx.layout.allShards().map((s) => [s]);
  const replies = await Promise.all(
    groups.map(
      (shards) =>
        ctx.call("peekFinished", "purgeFinished", [
          ctx.layout.finished(shards[0] as number),
          ctx.layout.tagStart(),
          String(before),
          String(want),
          ...shards.map(String),
        ]) as Promise<string[]>,
    ),
  );
  const picks: Pick[] = [];
  for (const flat of replies) {
    for (let i = 0; i + 2 < flat.length; i += 3) {
      picks.push({ shard: Number(flat[i]), instanceId: str(flat[i + 1] as string), at: Number(flat[i + 2]) });
    }
  }
  // Redis orders equal scores by member bytes: compareIds (UTF-8 byte order) agrees.
  return picks.sort((a, b) => a.at - b.at || compareIds(a.instanceId, b.instanceId));
}

/** Deletes the picks (one script per BATCH of one slot); how many were deleted. */
async function drop(ctx: ShardContext, picks: readonly Pick[], before: number): Promise<number> {
  const groups = ctx.oneScript ? [picks] : [...groupByShard(picks).values()];
  const counts = await Promise.allSettled(
    groups.map(async (group) => {
      let count = 0;
      for (let i = 0; i < group.length; i += BATCH) {
        const batch = group.slice(i, i + BATCH);
        const args = [ctx.layout.finished((batch[0] as Pick).shard), ctx.layout.tagStart(), String(before)];
        for (const { shard, instanceId } of batch) args.push(String(shard), instanceId);
        const reply = Number(await ctx.call("purgeFinished", "purgeFinished", args));
        if (!Number.isSafeInteger(reply) || reply < 0 || reply > batch.length) {
          throw new BackendError(`purgeFinished: the script answered ${reply} for ${batch.length} instances`);
        }
        count += reply;
      }
      return count;
    }),
  );
  let total = 0;
  for (const outcome of counts) {
    if (outcome.status === "rejected") throw outcome.reason;
    total += outcome.value;
  }
  return total;
}

/**
 * The migration of stores written before the finish-time index: every finished instance without
 * a finish time gets its updatedAt (the best estimate there is) in its field and the index. It
 * walks every shard's ids set, a page per script; each page is idempotent, so two clients
 * migrating at once, or a migration cut short and run again, agree. The backend runs it before
 * its first purge unless the store record says it is done, and records it done after.
 */
export async function indexFinishedInstances(ctx: ShardContext): Promise<void> {
  await Promise.all(
    ctx.layout.allShards().map(async (shard) => {
      let after = "";
      for (;;) {
        const [walked, last] = (await ctx.call(
          "indexFinished",
          "purgeFinished (indexing finished workflows)",
          [ctx.layout.ids(shard), ctx.layout.base(shard), after, String(INDEX_PAGE)],
        )) as [number, string];
        if (Number(walked) < INDEX_PAGE) return;
        after = str(last);
      }
    }),
  );
}
