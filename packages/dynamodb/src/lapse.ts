/*
 * Refusals by expiry, made durable. A renewal or a fenced write judges the claim on this
 * process's clock and sends that reading in its condition (`expiresAt > :now`), so a call of the
 * holder judged live just before the claim's end and delayed on the way can land after it; in
 * between another call of the same holder may have been refused as expired. Linearizably that
 * refusal came first and the claim is dead, so the late call must not land.
 *
 * So before a refusal by expiry is answered, it marks the claim lapsed (ATTR.lapsed), on the
 * condition that the claim is still the one judged (token, holder, expiry, not yet lapsed), and
 * every renewal and fenced write requires the mark absent. Either the late call landed first (the
 * mark's condition fails: the claim is live again, judge again) or the mark did (the late call's
 * condition fails and its retry is refused). MongoDB does the same with its compare-and-set.
 */
import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { type CompletionOutcome, ErrorCode, type Fence, isPersistenceError } from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import type { Context } from "./context.js";
import { expressions, isConditionFailed, N, S } from "./dynamo.js";
import { getClaim, parseClaim, type StoredClaim } from "./items.js";
import { ATTR } from "./layout.js";

/** How often a refused write is judged again after a renewal landed under it (then it stands). */
const REJUDGE_ATTEMPTS = 3;

/**
 * Is `claim` held by `workerId` and expired at `now` by its own expiry (with a ttl, not revoked,
 * not lapsed): a refusal of its holder must mark it lapsed before it is answered.
 */
export function isExpiredHold(claim: StoredClaim | undefined, workerId: string, now: number): boolean {
  return (
    claim !== undefined &&
    claim.workerId === workerId &&
    claim.lapsed === undefined &&
    claim.expiresAt !== undefined &&
    claim.expiresAt > REVOKED_EXPIRY &&
    claim.expiresAt <= now
  );
}

/**
 * Marks `claim` (as read: held, expired) lapsed at `now`. True when it is lapsed now; otherwise
 * the claim item as it now is (renewed, released, taken over, revoked): judge again.
 */
export async function markLapsed(
  ctx: Context,
  pk: string,
  taskId: string,
  claim: StoredClaim,
  now: number,
): Promise<true | { current: StoredClaim | undefined }> {
  try {
    await ctx.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.claimKey(pk, taskId),
        ...expressions(
          {
            UpdateExpression: `SET #${ATTR.lapsed} = :now`,
            ConditionExpression:
              `#${ATTR.token} = :tok AND #${ATTR.worker} = :w AND #${ATTR.expiresAt} = :exp AND ` +
              `attribute_not_exists(#${ATTR.lapsed})`,
          },
          {
            ":now": N(now),
            ":tok": N(claim.token),
            ":w": S(claim.workerId ?? ""),
            ":exp": N(claim.expiresAt ?? 0),
          },
        ),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      }),
    );
    return true;
  } catch (error) {
    if (!isConditionFailed(error)) throw error;
    const current = parseClaim(error.Item);
    // An SDK retry of our own mark that did land, or another refusal's mark: lapsed either way.
    if (current?.lapsed !== undefined && current.token === claim.token) return true;
    return { current };
  }
}

/**
 * After a fenced write of `fence` was refused with ClaimLostError: does the refusal stand? The
 * claim is marked lapsed first when it is still the fence's, held and expired on this clock.
 * False only when the claim is live again with the fence's token: a renewal of the holder that
 * was in flight landed since the refusal was judged, so the write is judged again.
 */
export async function refusalStands(ctx: Context, instanceId: string, fence: Fence): Promise<boolean> {
  const pk = ctx.layout.instancePk(instanceId);
  let claim = await getClaim(ctx, pk, fence.taskId);
  for (;;) {
    if (claim?.workerId === undefined || claim.token !== fence.token) return true;
    const now = ctx.now();
    if (!isExpiredHold(claim, claim.workerId, now)) {
      // Lapsed or revoked already: it stands. Live (a renewal landed): judge again.
      return claim.lapsed !== undefined || (claim.expiresAt !== undefined && claim.expiresAt <= now);
    }
    const marked = await markLapsed(ctx, pk, fence.taskId, claim, now);
    if (marked === true) return true;
    claim = marked.current;
  }
}

/** Is this a ClaimLostError? */
const isClaimLost = (error: unknown): boolean =>
  isPersistenceError(error) && error.code === ErrorCode.ClaimLost;

/**
 * Runs a fenced write; a ClaimLostError is answered only once it stands (refusalStands),
 * otherwise the write runs again (a few times at most: then the refusal is answered).
 */
export async function durableRefusal<T>(
  ctx: Context,
  instanceId: string,
  fence: Fence | undefined,
  write: () => Promise<T>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (fence === undefined || !isClaimLost(error)) throw error;
      if ((await refusalStands(ctx, instanceId, fence)) || attempt >= REJUDGE_ATTEMPTS) throw error;
    }
  }
}

/**
 * Runs a batch of fenced writes (completeTasks, failTasks) with per-item outcomes; items refused
 * with ClaimLostError whose refusal does not stand run again, by themselves (a few times at
 * most: then the refusal is answered).
 */
export async function durableRefusals<I extends Fence & { instanceId: string }>(
  ctx: Context,
  items: readonly I[],
  write: (items: readonly I[]) => Promise<CompletionOutcome[]>,
): Promise<CompletionOutcome[]> {
  const outcomes = await write(items);
  let open = items.map((_, index) => index);
  for (let attempt = 1; ; attempt++) {
    const again: number[] = [];
    await Promise.all(
      open.map(async (index) => {
        const item = items[index] as I;
        if (isClaimLost(outcomes[index]) && !(await refusalStands(ctx, item.instanceId, item)))
          again.push(index);
      }),
    );
    if (again.length === 0 || attempt >= REJUDGE_ATTEMPTS) return outcomes;
    again.sort((a, b) => a - b);
    const rerun = await write(again.map((index) => items[index] as I));
    for (const [k, index] of again.entries()) outcomes[index] = rerun[k] ?? null;
    open = again;
  }
}
