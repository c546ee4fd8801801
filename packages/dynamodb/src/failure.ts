/*
 * failTasks: per failure, one transaction (like a completeTasks group): the head's attempts
 * updated (count + 1, lastError, lastFailedAt = our clock, retryAt) and, when the failed task is
 * the position's, its index entry moved where homeOf puts it with the new attempts (timer index
 * at retryAt, ready partition when retryAt has passed; the task after a wait: the timer index at
 * the later of retryAt and its timeout, at retryAt with an event pending, which takes one Query
 * more; none when retryAt is null: held), and the claim turned into a tombstone under the fence
 * condition. Refusals as completeTasks: NotFound, then ClaimLost, then Conflict.
 */
import { type AttributeValue, GetItemCommand, TransactWriteItemsCommand } from "@aws-sdk/client-dynamodb";
import { type CompletionOutcome, decodeSnapshotHeader, type ValidFailure } from "@sayiir/persistence-core";
import { RETRY, resultRefusal, retryOnRace } from "@sayiir/persistence-core/adapter";
import { attemptsCondition } from "./claims.js";
import { type Context, quote, RACE_ATTEMPTS, tombstoneTtl } from "./context.js";
import { cancellationReasons, expressions, type Item, isConflictOnly, N, S, str } from "./dynamo.js";
import { oldestEvents } from "./events.js";
import {
  attemptsOf,
  encodeAttempts,
  eventCountCondition,
  FENCE_CONDITION,
  getHead,
  type Head,
  heldView,
  kindCondition,
  nonceCondition,
  parseClaim,
  type StoredAttempt,
  TOMBSTONE_UPDATE,
} from "./items.js";
import { ATTR, freshId, STATUS } from "./layout.js";
import { entryAttributes, homeOf, INDEX_KEYS, replaceAttributes, updateExpression } from "./readiness.js";

/** Instances whose failures are recorded at once. */
const FAILURE_LANES = 16;

export async function failTasks(ctx: Context, items: readonly ValidFailure[]): Promise<CompletionOutcome[]> {
  const outcomes: CompletionOutcome[] = new Array(items.length).fill(null);
  const byInstance = new Map<string, number[]>();
  for (const [index, item] of items.entries()) {
    const list = byInstance.get(item.instanceId) ?? [];
    list.push(index);
    byInstance.set(item.instanceId, list);
  }
  const lanes = [...byInstance.values()];
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let i = next++; i < lanes.length; i = next++) {
      for (const index of lanes[i] as number[])
        outcomes[index] = await failOne(ctx, items[index] as ValidFailure);
    }
  };
  await Promise.all(Array.from({ length: Math.min(FAILURE_LANES, lanes.length) }, lane));
  return outcomes;
}

/** One failure: read the head and the claim, judge, send; a lost race reads again. */
async function failOne(ctx: Context, f: ValidFailure): Promise<CompletionOutcome> {
  const pk = ctx.layout.instancePk(f.instanceId);
  const fence = { taskId: f.taskId, token: f.token };
  const nonce = freshId();
  return retryOnRace(
    `failTasks on ${quote(f.instanceId)}`,
    async () => {
      const [head, claimItem] = await Promise.all([
        getHead(ctx, f.instanceId),
        getClaimItem(ctx, pk, f.taskId),
      ]);
      const claim = parseClaim(claimItem);
      // An earlier send of ours that landed unseen: the tombstone carries our nonce.
      if (
        claim?.token === f.token &&
        claim.workerId === undefined &&
        str(claimItem, ATTR.completedBy) === nonce
      )
        return null;
      const now = ctx.now();
      const view = {
        found: head !== undefined,
        finished: head?.finished ?? false,
        claim: heldView(claim),
        now,
      };
      const refusal = resultRefusal(f.instanceId, fence, view);
      if (refusal !== null) return refusal;
      const wait = (head as Head).awaiting;
      const eventPending =
        wait !== undefined && (await oldestEvents(ctx, head as Head, wait.eventName)).length > 0;
      const due = await dueAt(ctx, head as Head, f);
      const position = await isPositionTask(ctx, head as Head, f.taskId);
      const reindex = { eventPending, due, position };
      return (await sendFailure(ctx, head as Head, f, reindex, now, nonce)) ? null : RETRY;
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * When the failed task may run again: the later of retryAt and its position's runAt (a task can
 * be claimed with claimTask, and failed, before its runAt). null: held. The runAt is in the header
 * (inline on the head unless large); the update is conditioned on the head as read.
 */
async function dueAt(ctx: Context, head: Head, f: ValidFailure): Promise<number | null> {
  if (f.retryAt === null) return null;
  if (head.positionTaskId !== f.taskId || head.awaiting !== undefined || head.header === undefined) {
    return f.retryAt;
  }
  const state = decodeSnapshotHeader(await ctx.chunks.read(head.header), head.instanceId, {
    results: [],
    lastCompletedTaskId: null,
  }).state;
  const runAt =
    state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.runAt : undefined;
  return runAt === undefined ? f.retryAt : Math.max(f.retryAt, runAt);
}

/**
 * Does the failure re-index the task: is it the task the position runs, still without a result?
 * An AtTask whose task already has a result is in no index (a save put it nowhere), and failing a
 * claim on it (claimTask) must not make it ready. The head's update is conditioned on its
 * updatedAt, which a result written meanwhile changes: the read cannot go stale unseen.
 */
async function isPositionTask(ctx: Context, head: Head, taskId: string): Promise<boolean> {
  if (head.positionTaskId !== taskId) return false;
  if (head.awaiting !== undefined) return true; // a wait's task is awaited only while it has no result
  // In an index (ready, leased, timer) or held after a failure: only a task without a result is
  // (a save indexes nothing else), so the usual failure, of a claim-next claim, reads nothing more.
  if (head.ready || head.timer || head.leaseSk !== undefined || head.held) return true;
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.resultKey(head.pk, head.generation, taskId),
      ConsistentRead: true,
      ProjectionExpression: "#pk",
      ExpressionAttributeNames: { "#pk": ATTR.pk },
    }),
  );
  return out.Item === undefined;
}

async function getClaimItem(ctx: Context, pk: string, taskId: string): Promise<Item | undefined> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.claimKey(pk, taskId),
      ConsistentRead: true,
    }),
  );
  return out.Item;
}

/**
 * Where the failed position task goes: its home with the new attempts (homeOf): held in none,
 * else the timer index until retryAt (a wait: until the later of retryAt and its timeout, unless
 * an event is pending), or the ready partition keyed by retryAt once it has passed.
 */
function retryEntry(ctx: Context, head: Head, retryAt: number | null, eventPending: boolean, now: number) {
  const after = { ...head, readyAt: retryAt ?? undefined, held: retryAt === null };
  return homeOf(ctx.layout, after, eventPending, now);
}

/** The head's update: its attempts, and for the position's task its entry, readyAt and hold. */
/** How the failure re-indexes the task: an event pending for its wait, and when it is due (null: held). */
interface Reindex {
  eventPending: boolean;
  due: number | null;
  /** The failed task is the position's and has no result: its index entry moves. */
  position: boolean;
}

function headUpdate(
  ctx: Context,
  head: Head,
  f: ValidFailure,
  { eventPending, due, position }: Reindex,
  now: number,
) {
  const before = attemptsOf(head, f.taskId);
  const after: StoredAttempt = {
    taskId: f.taskId,
    count: (before?.count ?? 0) + 1,
    lastError: f.error,
    lastFailedAt: now,
    retryAt: f.retryAt,
  };
  const attempts = encodeAttempts([...head.attempts.filter((a) => a.taskId !== f.taskId), after]) as string;
  const set = [`#${ATTR.attempts} = :att_new`];
  const remove: string[] = [];
  const values: Record<string, AttributeValue> = {
    ":att_new": S(attempts),
    ":att": S(head.attemptsJson ?? ""),
    ":gen": S(head.generation),
    ":P": S(STATUS.inProgress),
    ":upd": N(head.updatedAt),
    ":kind": S(head.kind ?? ""),
    ":nc_read": S(head.nonce ?? ""),
    ":evn": N(head.eventCount),
  };
  if (position) {
    const moved = replaceAttributes(
      entryAttributes(retryEntry(ctx, head, due, eventPending, now)),
      INDEX_KEYS,
    );
    set.push(...moved.set);
    remove.push(...moved.remove);
    Object.assign(values, moved.values);
    if (due === null) {
      set.push(`#${ATTR.held} = :hold`);
      values[":hold"] = { BOOL: true };
      remove.push(`#${ATTR.readyAt}`);
    } else {
      remove.push(`#${ATTR.held}`);
      set.push(`#${ATTR.readyAt} = :rat`);
      values[":rat"] = N(due);
    }
  }
  const condition = [
    `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen AND #${ATTR.status} = :P`,
    `#${ATTR.updatedAt} = :upd`,
    kindCondition(head.kind),
    nonceCondition(head.nonce),
    eventCountCondition(head.eventCount),
    attemptsCondition(head),
  ].join(" AND ");
  return expressions(
    { UpdateExpression: updateExpression(set, remove), ConditionExpression: condition },
    values,
  );
}

/** One transaction: the head's update and the claim's tombstone. False: a lost race. */
async function sendFailure(
  ctx: Context,
  head: Head,
  f: ValidFailure,
  reindex: Reindex,
  now: number,
  nonce: string,
): Promise<boolean> {
  const { layout } = ctx;
  try {
    await ctx.send(
      () =>
        new TransactWriteItemsCommand({
          ClientRequestToken: freshId(),
          TransactItems: [
            {
              Update: {
                TableName: ctx.tableName,
                Key: layout.headKey(head.pk),
                ...headUpdate(ctx, head, f, reindex, now),
              },
            },
            {
              Update: {
                TableName: ctx.tableName,
                Key: layout.claimKey(head.pk, f.taskId),
                ...expressions(
                  {
                    UpdateExpression: `${TOMBSTONE_UPDATE}, #${ATTR.completedBy} = :cn`,
                    ConditionExpression: FENCE_CONDITION,
                  },
                  { ":tok": N(f.token), ":now": N(now), ":ttl": N(tombstoneTtl(now)), ":cn": S(nonce) },
                ),
              },
            },
          ],
        }),
    );
    return true;
  } catch (error) {
    const reasons = cancellationReasons(error);
    if (reasons === undefined || isConflictOnly(error)) throw error;
    if (!reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      throw error;
    return false;
  }
}
