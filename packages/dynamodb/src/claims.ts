/*
 * claimTask, releaseTaskClaim and extendTaskClaim: conditional writes on the claim item, judged on
 * the client clock (the holder trusts its claim until expiresAt, others wait expiresAt + the skew
 * budget). Claim-next (discovery.ts) claims through tryClaim too, moving the head to the leased
 * partition of the ready index in the same transaction.
 */
import { PutItemCommand, TransactWriteItemsCommand, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { BackendError, type TaskClaim } from "@sayiir/persistence-core";
import { extendRefusal, RETRY, releaseRefusal, retryOnRace } from "@sayiir/persistence-core/adapter";
import { type Context, quote, RACE_ATTEMPTS, retryUnlessLast, tombstoneTtl } from "./context.js";
import {
  cancellationReasons,
  expressions,
  type Item,
  isConditionFailed,
  isConflictOnly,
  N,
  S,
} from "./dynamo.js";
import {
  getClaim,
  getHead,
  type Head,
  heldView,
  liveForOthers,
  parseClaim,
  type StoredClaim,
  TOMBSTONE_UPDATE,
} from "./items.js";
import { ATTR, freshId } from "./layout.js";

/** A claim this call writes (every field set, but expiresAt without ttl). */
type NewClaim = StoredClaim & { workerId: string; claimedAt: number; nonce: string };

export function toClaim(instanceId: string, taskId: string, workerId: string, claim: StoredClaim): TaskClaim {
  return {
    instanceId,
    taskId,
    workerId,
    claimedAt: claim.claimedAt ?? 0,
    expiresAt: claim.expiresAt ?? null,
    token: claim.token,
  };
}

/** When others may take a claim over: expiresAt + skew budget (no ttl: never). */
export function leaseEnd(ctx: Context, expiresAt: number | undefined): number | undefined {
  return expiresAt === undefined ? undefined : expiresAt + ctx.options.skewMs;
}

/**
 * Claims (instance, task) with a conditional write on the claim item. With `ready`, the head must
 * still show this exact ready state in the same transaction (claim-next). null: the task is
 * claimed by someone else, no longer ready, or the races were lost RACE_ATTEMPTS times.
 */
export async function tryClaim(
  ctx: Context,
  instanceId: string,
  taskId: string,
  workerId: string,
  ttlMs: number | null,
  ready?: Head,
): Promise<TaskClaim | null> {
  const pk = ctx.layout.instancePk(instanceId);
  let current = await getClaim(ctx, pk, taskId);
  return retryOnRace(
    `claimTask on ${quote(instanceId)}`,
    async (attempt) => {
      const now = ctx.now();
      if (liveForOthers(ctx, current, now)) return null;
      const claim: NewClaim = {
        token: Math.max((current?.token ?? 0) + 1, now * 1000),
        workerId,
        claimedAt: now,
        expiresAt: ttlMs === null ? undefined : now + ttlMs,
        nonce: freshId(),
      };
      const outcome = await putClaim(ctx, pk, instanceId, taskId, claim, current, ready);
      if (outcome === "landed") return toClaim(instanceId, taskId, workerId, claim);
      if (outcome === "not ready") return null;
      current = outcome.current;
      // An SDK retry of a put that did land (the nonce: two callers can compute the same token).
      if (current?.token === claim.token && current.nonce === claim.nonce) {
        return toClaim(instanceId, taskId, workerId, claim);
      }
      return retryUnlessLast(attempt, null);
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * One attempt: the claim item's put, conditioned on the claim read (none, or that token and
 * released or past expiresAt + skew budget). "not ready": claim-next's head changed; otherwise
 * a lost race gives the claim item found.
 */
async function putClaim(
  ctx: Context,
  pk: string,
  instanceId: string,
  taskId: string,
  claim: NewClaim,
  current: StoredClaim | undefined,
  ready: Head | undefined,
): Promise<"landed" | "not ready" | { current: StoredClaim | undefined }> {
  const item: Item = {
    ...ctx.layout.claimKey(pk, taskId),
    [ATTR.instanceId]: S(instanceId),
    [ATTR.taskId]: S(taskId),
    [ATTR.token]: N(claim.token),
    [ATTR.worker]: S(claim.workerId),
    [ATTR.claimedAt]: N(claim.claimedAt),
    [ATTR.nonce]: S(claim.nonce),
  };
  if (claim.expiresAt !== undefined) item[ATTR.expiresAt] = N(claim.expiresAt);
  const put = {
    TableName: ctx.tableName,
    Item: item,
    ...expressions(
      {
        ConditionExpression:
          current === undefined
            ? `attribute_not_exists(#${ATTR.pk})`
            : `#${ATTR.token} = :old AND (attribute_not_exists(#${ATTR.worker}) OR #${ATTR.expiresAt} <= :cut)`,
      },
      current === undefined
        ? {}
        : { ":old": N(current.token), ":cut": N(claim.claimedAt - ctx.options.skewMs) },
    ),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
  };
  try {
    if (ready === undefined) await ctx.send(new PutItemCommand(put));
    else {
      const lease = leaseUpdate(ctx, ready, taskId, claim);
      await ctx.send(
        () =>
          new TransactWriteItemsCommand({
            ClientRequestToken: freshId(),
            TransactItems: [{ Update: lease }, { Put: put }],
          }),
      );
    }
    return "landed";
  } catch (error) {
    if (isConditionFailed(error)) return { current: parseClaim(error.Item) };
    const reasons = cancellationReasons(error);
    if (reasons === undefined || isConflictOnly(error)) throw error;
    // The task is no longer in the state the caller saw: not ready, nothing to claim.
    if (reasons[0]?.Code === "ConditionalCheckFailed") return "not ready";
    if (reasons[1]?.Code === "ConditionalCheckFailed") return { current: parseClaim(reasons[1].Item) };
    if (!reasons.some((r) => r.Code === "TransactionConflict")) throw error;
    return { current: await getClaim(ctx, pk, taskId) };
  }
}

/**
 * Claim-next: the head, still ready at this task with the generation and last completed task
 * read (so the input returned is the one claimed against), moves to the leased partition keyed
 * by when others may take the claim over: discovery no longer reads past it.
 */
function leaseUpdate(ctx: Context, ready: Head, taskId: string, claim: NewClaim) {
  const { layout } = ctx;
  const headCondition =
    `attribute_exists(#${ATTR.readyPk}) AND #${ATTR.generation} = :gen AND #${ATTR.position} = :pos AND ` +
    (ready.lastCompletedTaskId === undefined
      ? `attribute_not_exists(#${ATTR.lastCompleted})`
      : `#${ATTR.lastCompleted} = :last`);
  return {
    TableName: ctx.tableName,
    Key: layout.headKey(ready.pk),
    ...expressions(
      {
        ConditionExpression: headCondition,
        UpdateExpression: `SET #${ATTR.readyPk} = :kpk, #${ATTR.readySk} = :ksk`,
      },
      {
        ":gen": S(ready.generation),
        ":pos": S(taskId),
        ":last": S(ready.lastCompletedTaskId ?? ""),
        ":kpk": S(layout.leasedPk(layout.shardOf(ready.instanceId))),
        ":ksk": S(layout.leaseSk(leaseEnd(ctx, claim.expiresAt), ready.instanceId)),
      },
    ),
  };
}

/** Moves a leased head's index entry (conditional on the lease it still has). */
export async function moveLease(ctx: Context, head: Head, to: { pk: string; sk: string }): Promise<void> {
  const { layout } = ctx;
  try {
    await ctx.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: layout.headKey(head.pk),
        ...expressions(
          {
            UpdateExpression: `SET #${ATTR.readyPk} = :to, #${ATTR.readySk} = :tosk`,
            ConditionExpression: `#${ATTR.readyPk} = :kpk AND #${ATTR.readySk} = :ksk`,
          },
          {
            ":to": S(to.pk),
            ":tosk": S(to.sk),
            ":kpk": S(layout.leasedPk(layout.shardOf(head.instanceId))),
            ":ksk": S(head.leaseSk ?? ""),
          },
        ),
      }),
    );
  } catch (error) {
    if (!isConditionFailed(error)) throw error;
  }
}

/** Where a head goes back to in the ready partition (its updatedAt order). */
export function readyEntry(ctx: Context, head: Head): { pk: string; sk: string } {
  const { layout } = ctx;
  return {
    pk: layout.readyPk(layout.shardOf(head.instanceId)),
    sk: layout.readySk(head.updatedAt, head.instanceId),
  };
}

/**
 * releaseTaskClaim: first out of the leased partition (if claim-next put the head there), then
 * the tombstone: a failure in between leaves a claimed task in the ready partition (harmless),
 * never an unclaimed one hidden in the leased partition.
 */
export async function releaseTaskClaim(
  ctx: Context,
  instanceId: string,
  taskId: string,
  workerId: string,
): Promise<void> {
  const pk = ctx.layout.instancePk(instanceId);
  let current = await getClaim(ctx, pk, taskId);
  const refusal = releaseRefusal(instanceId, taskId, heldView(current), workerId);
  if (refusal !== null) throw refusal;
  const head = await getHead(ctx, instanceId).catch((error: unknown) => {
    if (error instanceof BackendError) return undefined; // another instance's head (hash collision)
    throw error;
  });
  if (head?.leaseSk !== undefined && head.positionTaskId === taskId) {
    await moveLease(ctx, head, readyEntry(ctx, head));
  }
  await retryOnRace(
    `releaseTaskClaim on ${quote(instanceId)}`,
    async () => {
      const refusal = releaseRefusal(instanceId, taskId, heldView(current), workerId);
      if (refusal !== null) throw refusal;
      const claim = current as StoredClaim;
      const lost = await tombstone(ctx, pk, taskId, claim.token, workerId);
      if (lost === null) return undefined;
      current = lost.current;
      // An SDK retry of an update that did land: the tombstone of our own token.
      if (current?.token === claim.token && current.workerId === undefined) return undefined;
      return RETRY;
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/** A tombstone, not a delete: it keeps the last token so the next claim's is larger. */
async function tombstone(
  ctx: Context,
  pk: string,
  taskId: string,
  token: number,
  workerId: string,
): Promise<{ current: StoredClaim | undefined } | null> {
  try {
    await ctx.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.claimKey(pk, taskId),
        ...expressions(
          {
            UpdateExpression: TOMBSTONE_UPDATE,
            ConditionExpression: `#${ATTR.token} = :tok AND #${ATTR.worker} = :w`,
          },
          { ":tok": N(token), ":w": S(workerId), ":ttl": N(tombstoneTtl(ctx.now())) },
        ),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      }),
    );
    return null;
  } catch (error) {
    if (!isConditionFailed(error)) throw error;
    return { current: parseClaim(error.Item) };
  }
}

/** extendTaskClaim: expiresAt becomes now + duration, if the holder's claim is still live. */
export async function extendTaskClaim(
  ctx: Context,
  instanceId: string,
  taskId: string,
  workerId: string,
  durationMs: number,
): Promise<TaskClaim> {
  const pk = ctx.layout.instancePk(instanceId);
  let current = await getClaim(ctx, pk, taskId);
  return retryOnRace(
    `extendTaskClaim on ${quote(instanceId)}`,
    async () => {
      const now = ctx.now();
      const refusal = extendRefusal(instanceId, taskId, heldView(current), workerId, now);
      if (refusal !== null) throw refusal;
      const claim = current as StoredClaim;
      if (claim.expiresAt === undefined) return toClaim(instanceId, taskId, workerId, claim);
      const expiresAt = now + durationMs;
      try {
        await ctx.send(
          new UpdateItemCommand({
            TableName: ctx.tableName,
            Key: ctx.layout.claimKey(pk, taskId),
            ...expressions(
              {
                UpdateExpression: `SET #${ATTR.expiresAt} = :exp`,
                ConditionExpression: `#${ATTR.token} = :tok AND #${ATTR.worker} = :w AND #${ATTR.expiresAt} > :now`,
              },
              { ":exp": N(expiresAt), ":tok": N(claim.token), ":w": S(workerId), ":now": N(now) },
            ),
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          }),
        );
        return toClaim(instanceId, taskId, workerId, { ...claim, expiresAt });
      } catch (error) {
        if (!isConditionFailed(error)) throw error;
        current = parseClaim(error.Item);
        return RETRY;
      }
    },
    { attempts: RACE_ATTEMPTS },
  );
}
