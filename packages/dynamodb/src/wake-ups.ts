/*
 * waitForTasks' probe. DynamoDB cannot push (streams need a consumer per shard and a poller of
 * their own), so waits poll: the hub looks adaptively, never less often than wakeBoundMs, and
 * each look is this probe. Per queue and shard it reads the first item of three index
 * partitions, keys only (no payload, half a read unit each), all at once:
 *  - the ready partition: any entry is a task ready to claim;
 *  - the timer partition (sorted by due time): its first entry is due now (ready) or is the
 *    queue's next due time (a runAt, a retry, a wait's timeout);
 *  - the leased partition (sorted by lease end): its first entry has ended (a takeover is ready)
 *    or is the next lease to end.
 * Like discovery's candidates these are only what the indexes say (they are eventually
 * consistent): a stale "ready" wakes a worker whose claim-next then verifies and finds nothing.
 */
import { QueryCommand, type QueryCommandOutput } from "@aws-sdk/client-dynamodb";
import type { WakeProbe } from "@sayiir/persistence-core";
import type { Context } from "./context.js";
import { expressions, S, str } from "./dynamo.js";
import { ATTR, READY_INDEX, TIMER_INDEX } from "./layout.js";

/** A lease end at or after this is LEASE_FOREVER's: a claim without ttl never comes due. */
const FOREVER = 9_000_000_000_000_000;

/** The Query requests one probe sends per queue: three per shard. */
export const probeRequestsPerQueue = (shards: number): number => 3 * shards;

/** The time at the front of the sort key of the first entry of one index partition (undefined: empty). */
async function firstTime(
  ctx: Context,
  index: typeof READY_INDEX | typeof TIMER_INDEX,
  pk: string,
): Promise<number | undefined> {
  const [pkName, skName] =
    index === READY_INDEX ? [ATTR.readyPk, ATTR.readySk] : [ATTR.timerPk, ATTR.timerSk];
  const out = await ctx.send<QueryCommandOutput>(
    new QueryCommand({
      TableName: ctx.tableName,
      IndexName: index,
      Limit: 1,
      ...expressions(
        {
          KeyConditionExpression: `#${pkName} = :pk`,
          ProjectionExpression: `#${ATTR.pk}, #${ATTR.sk}, #${skName}`,
        },
        { ":pk": S(pk) },
      ),
    }),
  );
  const sk = out.Items?.[0] === undefined ? undefined : str(out.Items[0], skName);
  return sk === undefined ? undefined : ctx.layout.timeOfSk(sk);
}

/** One look for waitForTasks (see the module comment), by the backend's clock. */
export async function probeWakeUp(ctx: Context, queues: readonly string[]): Promise<WakeProbe> {
  const { layout } = ctx;
  const shards = Array.from({ length: layout.shards }, (_, shard) => shard);
  const looks = queues.flatMap((queue) =>
    shards.flatMap((shard) => [
      // Any entry of the ready partition is ready, whatever its key: as if due at the epoch.
      firstTime(ctx, READY_INDEX, layout.readyPk(shard, queue)).then((t) => (t === undefined ? t : 0)),
      firstTime(ctx, TIMER_INDEX, layout.timerPk(shard, queue)),
      firstTime(ctx, READY_INDEX, layout.leasedPk(shard, queue)),
    ]),
  );
  const times = await Promise.all(looks);
  const now = ctx.now();
  let nextDueAt: number | null = null;
  for (const time of times) {
    if (time === undefined || time >= FOREVER) continue;
    // A ready entry, a timer due or a lease ended: claimable now.
    if (time <= now) return { ready: true, nextDueAt: null };
    if (nextDueAt === null || time < nextDueAt) nextDueAt = time;
  }
  return { ready: false, nextDueAt };
}
