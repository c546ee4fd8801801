/*
 * claimTask, releaseTaskClaim and extendTaskClaim: conditional writes on the claim item, judged on
 * the client clock (the holder trusts its claim until expiresAt, others wait expiresAt + the skew
 * budget). Claim-next (discovery.ts) claims through tryClaim too, moving the head to the leased
 * partition of the ready index in the same transaction.
 */
import {
  GetItemCommand,
  PutItemCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { BackendError, type RenewedClaim, type TaskClaim } from "@sayiir/persistence-core";
import {
  extendRefusal,
  RETRY,
  releaseRefusal,
  retryOnRace,
  type StoredStatus,
} from "@sayiir/persistence-core/adapter";
import { type Context, quote, RACE_ATTEMPTS, retryUnlessLast, tombstoneTtl } from "./context.js";
import {
  cancellationReasons,
  expressions,
  type Item,
  isConditionFailed,
  isConflictOnly,
  N,
  S,
  str,
} from "./dynamo.js";
import { oldestEvents } from "./events.js";
import {
  attemptsOf,
  encodeAttempts,
  eventCountCondition,
  getClaim,
  getHead,
  type Head,
  heldView,
  liveForOthers,
  parseClaim,
  type StoredAttempt,
  type StoredClaim,
  TOMBSTONE_UPDATE,
} from "./items.js";
import { isExpiredHold, markLapsed } from "./lapse.js";
import { ATTR, freshId, names } from "./layout.js";
import { homeOf, leasedEntry, moveLease } from "./readiness.js";

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
 * What claim-next claims against: the head read, and whether the task is ready because its wait
 * timed out (then no event may have been sent since: an event wins over a timeout).
 */
export interface LeaseTarget {
  head: Head;
  timedOut: boolean;
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
): Promise<TaskClaim | null> {
  return (await claimOn(ctx, instanceId, taskId, workerId, ttlMs))?.claim ?? null;
}

/**
 * Claim-next's claim: tryClaim against the head as read (`ready`). `counted`: the claim took over
 * a held claim that had ended, so the task's attempt count went up by one in the same write.
 */
export async function claimReady(
  ctx: Context,
  instanceId: string,
  taskId: string,
  workerId: string,
  ttlMs: number | null,
  ready: LeaseTarget & { claim: StoredClaim | undefined },
): Promise<{ claim: TaskClaim; counted: boolean } | null> {
  return claimOn(ctx, instanceId, taskId, workerId, ttlMs, ready);
}

/**
 * `ready`: claim-next's target, with the claim item as read with the head (no second read: the
 * put is conditioned on it, and a lost condition returns the claim found, as a re-read would).
 */
async function claimOn(
  ctx: Context,
  instanceId: string,
  taskId: string,
  workerId: string,
  ttlMs: number | null,
  ready?: LeaseTarget & { claim: StoredClaim | undefined },
): Promise<{ claim: TaskClaim; counted: boolean } | null> {
  const pk = ctx.layout.instancePk(instanceId);
  let current = ready === undefined ? await getClaim(ctx, pk, taskId) : ready.claim;
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
      // Claim-next taking over a held claim that ended counts one more attempt of the task (a
      // takeover by claimTask does not: the fencing group wants the snapshot left as it was).
      const counted = current?.workerId === undefined ? undefined : ready?.head;
      const outcome = await putClaim(ctx, pk, { instanceId, taskId, claim, current, ready, counted });
      const landed = { claim: toClaim(instanceId, taskId, workerId, claim), counted: counted !== undefined };
      if (outcome === "landed") return landed;
      if (outcome === "not ready") return null;
      current = outcome.current;
      // An SDK retry of a put that did land (the nonce: two callers can compute the same token).
      if (current?.token === claim.token && current.nonce === claim.nonce) return landed;
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
  p: {
    instanceId: string;
    taskId: string;
    claim: NewClaim;
    current: StoredClaim | undefined;
    ready: LeaseTarget | undefined;
    /** A takeover by claim-next: the head whose attempts count it (conditioned on them as read). */
    counted: Head | undefined;
  },
): Promise<"landed" | "not ready" | { current: StoredClaim | undefined }> {
  const { instanceId, taskId, claim, current, ready, counted } = p;
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
        // A counted takeover also needs the holder still there: a release since the claim was
        // read (claim-next reads it with the head) is no run to count (read again instead).
        ConditionExpression:
          current === undefined
            ? `attribute_not_exists(#${ATTR.pk})`
            : counted === undefined
              ? `#${ATTR.token} = :old AND (attribute_not_exists(#${ATTR.worker}) OR #${ATTR.expiresAt} <= :cut)`
              : `#${ATTR.token} = :old AND attribute_exists(#${ATTR.worker}) AND #${ATTR.expiresAt} <= :cut`,
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
      const lease = leaseUpdate(ctx, ready, taskId, claim, counted);
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
    // The task is no longer in the state the caller saw (its attempts included): nothing to claim.
    if (reasons[0]?.Code === "ConditionalCheckFailed") return "not ready";
    if (reasons[1]?.Code === "ConditionalCheckFailed") return { current: parseClaim(reasons[1].Item) };
    if (!reasons.some((r) => r.Code === "TransactionConflict")) throw error;
    return { current: await getClaim(ctx, pk, taskId) };
  }
}

/**
 * Claim-next: the head, still ready at this task (in the ready index, or due in the timer index)
 * with the generation and last completed task read (so the input returned is the one claimed
 * against; a timed-out wait also with no event sent since), moves to the leased partition keyed by
 * when others may take the claim over: discovery no longer reads past it.
 */
function leaseUpdate(
  ctx: Context,
  { head, timedOut }: LeaseTarget,
  taskId: string,
  claim: NewClaim,
  counted: Head | undefined,
) {
  const { layout } = ctx;
  const lease = leasedEntry(layout, head.instanceId, head.queue, leaseEnd(ctx, claim.expiresAt));
  const count = counted === undefined ? undefined : bumped(head, taskId);
  const headCondition = [
    `(attribute_exists(#${ATTR.readyPk}) OR attribute_exists(#${ATTR.timerPk}))`,
    `#${ATTR.generation} = :gen AND #${ATTR.position} = :pos`,
    head.lastCompletedTaskId === undefined
      ? `attribute_not_exists(#${ATTR.lastCompleted})`
      : `#${ATTR.lastCompleted} = :last`,
    ...(timedOut ? [eventCountCondition(head.eventCount)] : []),
    // The attempts as read, always: a failTasks that landed since the head was read (a retryAt
    // that holds the task, one more failed run) changes them, and the attempt reported, the
    // never-early rule and a takeover's count are all taken from this read.
    attemptsCondition(head),
  ].join(" AND ");
  return {
    TableName: ctx.tableName,
    Key: layout.headKey(head.pk),
    ...expressions(
      {
        ConditionExpression: headCondition,
        UpdateExpression: `SET #${ATTR.readyPk} = :kpk, #${ATTR.readySk} = :ksk${count === undefined ? "" : `, #${ATTR.attempts} = :att_new`} REMOVE #${ATTR.timerPk}, #${ATTR.timerSk}`,
      },
      {
        ...(count === undefined ? {} : { ":att_new": S(count) }),
        ":att": S(head.attemptsJson ?? ""),
        ":gen": S(head.generation),
        ":pos": S(taskId),
        ":last": S(head.lastCompletedTaskId ?? ""),
        ":evn": N(head.eventCount),
        ":kpk": S(lease?.pk ?? ""),
        ":ksk": S(lease?.sk ?? ""),
      },
    ),
  };
}

/** The head's attempts with one more run of `taskId` (a takeover: lastError stays). */
function bumped(head: Head, taskId: string): string {
  const before = attemptsOf(head, taskId);
  const after: StoredAttempt = {
    lastError: null,
    lastFailedAt: null,
    ...before,
    taskId,
    count: (before?.count ?? 0) + 1,
  };
  return encodeAttempts([...head.attempts.filter((a) => a.taskId !== taskId), after]) as string;
}

/** The condition that the head's attempts are still as read (`:att`). */
export function attemptsCondition(head: Head): string {
  return head.attemptsJson === undefined
    ? `attribute_not_exists(#${ATTR.attempts})`
    : `#${ATTR.attempts} = :att`;
}

/**
 * releaseTaskClaim: first out of the leased partition (if claim-next put the head there: back to
 * the ready partition, or, for a wait with no event pending, to the timer index), then the
 * tombstone: a failure in between leaves a claimed task in the ready partition (harmless), never
 * an unclaimed one hidden in the leased partition.
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
    const wait = head.awaiting;
    const pending = wait !== undefined && (await oldestEvents(ctx, head, wait.eventName)).length > 0;
    await moveLease(ctx, head, homeOf(ctx.layout, head, pending, ctx.now()));
  }
  // Marks this call's tombstone: a concurrent release of the same claim (the same worker, the same
  // token) leaves another nonce, and that one must answer NotFound, not success.
  const nonce = freshId();
  await retryOnRace(
    `releaseTaskClaim on ${quote(instanceId)}`,
    async () => {
      const refusal = releaseRefusal(instanceId, taskId, heldView(current), workerId);
      if (refusal !== null) throw refusal;
      const claim = current as StoredClaim;
      const lost = await tombstone(ctx, pk, taskId, claim.token, workerId, nonce);
      if (lost === null) return undefined;
      current = lost.current;
      // An SDK retry of our own update that did land: the tombstone of our token, with our nonce.
      if (current?.token === claim.token && current.workerId === undefined && lost.releasedBy === nonce)
        return undefined;
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
  nonce: string,
): Promise<{ current: StoredClaim | undefined; releasedBy: string | undefined } | null> {
  try {
    await ctx.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.claimKey(pk, taskId),
        ...expressions(
          {
            UpdateExpression: `${TOMBSTONE_UPDATE}, #${ATTR.completedBy} = :cn`,
            ConditionExpression: `#${ATTR.token} = :tok AND #${ATTR.worker} = :w`,
          },
          { ":tok": N(token), ":w": S(workerId), ":ttl": N(tombstoneTtl(ctx.now())), ":cn": S(nonce) },
        ),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      }),
    );
    return null;
  } catch (error) {
    if (!isConditionFailed(error)) throw error;
    return { current: parseClaim(error.Item), releasedBy: str(error.Item, ATTR.completedBy) };
  }
}

/**
 * The state of a claim's workflow that a heartbeat answers to: Paused (reported), Cancelled (the
 * heartbeat fails), or neither (undefined: any other state, a missing head, or one of another
 * instance id). Read with the claim; the renewal's transaction checks it has not changed.
 */
type Watched = "Paused" | "Cancelled" | undefined;

async function watchedState(ctx: Context, pk: string, instanceId: string): Promise<Watched> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.headKey(pk),
      ConsistentRead: true,
      ...expressions({ ProjectionExpression: names(ATTR.instanceId, ATTR.kind) }),
    }),
  );
  if (str(out.Item, ATTR.instanceId) !== instanceId) return undefined;
  const kind = str(out.Item, ATTR.kind);
  return kind === PAUSED || kind === CANCELLED ? kind : undefined;
}

const PAUSED = "Paused" satisfies StoredStatus;
const CANCELLED = "Cancelled" satisfies StoredStatus;

/**
 * extendTaskClaim: expiresAt becomes now + duration, if the holder's claim is still live and its
 * workflow not cancelled (extendRefusal), in one transaction with a check that the workflow is
 * still in the state read (paused or not, and not cancelled): the renewed claim says so exactly.
 * A claim without ttl needs no write.
 */
export async function extendTaskClaim(
  ctx: Context,
  instanceId: string,
  taskId: string,
  workerId: string,
  durationMs: number,
): Promise<RenewedClaim> {
  const pk = ctx.layout.instancePk(instanceId);
  let [current, state] = await Promise.all([getClaim(ctx, pk, taskId), watchedState(ctx, pk, instanceId)]);
  return retryOnRace(
    `extendTaskClaim on ${quote(instanceId)}`,
    async () => {
      const now = ctx.now();
      const refusal = extendRefusal(instanceId, taskId, heldView(current), workerId, now, state);
      if (refusal !== null) {
        // Refused because the holder's own claim expired: made durable first (see lapse.ts).
        if (current === undefined || !isExpiredHold(current, workerId, now)) throw refusal;
        const marked = await markLapsed(ctx, pk, taskId, current, now);
        if (marked === true) throw refusal;
        current = marked.current;
        return RETRY;
      }
      const claim = current as StoredClaim;
      const paused = state === PAUSED;
      if (claim.expiresAt === undefined)
        return { ...toClaim(instanceId, taskId, workerId, claim), workflowPaused: paused };
      const expiresAt = now + durationMs;
      const lost = await renew(ctx, pk, {
        instanceId,
        taskId,
        workerId,
        token: claim.token,
        now,
        expiresAt,
        paused,
      });
      if (lost === null) {
        if (expiresAt < claim.expiresAt) await rekeyShortenedLease(ctx, instanceId, taskId, expiresAt);
        return { ...toClaim(instanceId, taskId, workerId, { ...claim, expiresAt }), workflowPaused: paused };
      }
      if ("claim" in lost) current = lost.claim;
      else state = await watchedState(ctx, pk, instanceId);
      return RETRY;
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * A renewal that shortened a claim-next lease (a heartbeat with a shorter duration than the lease
 * had left) re-keys the head in the leased partition: discovery finds ended leases by that key,
 * and a key still at the old, later end would hide a crashed worker's task until then. A longer
 * renewal leaves the key early, which costs only a verification read. Conditional on the lease
 * as read (moveLease): a head moved meanwhile is left alone.
 */
async function rekeyShortenedLease(
  ctx: Context,
  instanceId: string,
  taskId: string,
  expiresAt: number,
): Promise<void> {
  const head = await getHead(ctx, instanceId);
  if (head?.leaseSk === undefined || head.positionTaskId !== taskId) return;
  const to = leasedEntry(ctx.layout, instanceId, head.queue, leaseEnd(ctx, expiresAt));
  if (to !== undefined && to.sk < head.leaseSk) await moveLease(ctx, head, to);
}

/**
 * One renewal: the claim's update (that token, held by the worker, not expired) and the check of
 * the head's state (paused as read, never cancelled). null: it landed; else the claim found, or
 * the state changed.
 */
async function renew(
  ctx: Context,
  pk: string,
  r: {
    instanceId: string;
    taskId: string;
    workerId: string;
    token: number;
    now: number;
    expiresAt: number;
    paused: boolean;
  },
): Promise<{ claim: StoredClaim | undefined } | { stateChanged: true } | null> {
  const ours = `#${ATTR.instanceId} = :iid`;
  const items: TransactWriteItem[] = [
    {
      Update: {
        TableName: ctx.tableName,
        Key: ctx.layout.claimKey(pk, r.taskId),
        ...expressions(
          {
            UpdateExpression: `SET #${ATTR.expiresAt} = :exp`,
            ConditionExpression:
              `#${ATTR.token} = :tok AND #${ATTR.worker} = :w AND #${ATTR.expiresAt} > :now AND ` +
              `attribute_not_exists(#${ATTR.lapsed})`,
          },
          { ":exp": N(r.expiresAt), ":tok": N(r.token), ":w": S(r.workerId), ":now": N(r.now) },
        ),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      },
    },
    {
      ConditionCheck: {
        TableName: ctx.tableName,
        Key: ctx.layout.headKey(pk),
        ...expressions(
          {
            ConditionExpression: r.paused
              ? `${ours} AND #${ATTR.kind} = :paused`
              : `NOT (${ours} AND #${ATTR.kind} IN (:paused, :cancelled))`,
          },
          { ":paused": S(PAUSED), ":cancelled": S(CANCELLED), ":iid": S(r.instanceId) },
        ),
      },
    },
  ];
  try {
    await ctx.send(
      () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
    );
    return null;
  } catch (error) {
    const reasons = cancellationReasons(error);
    if (reasons === undefined || isConflictOnly(error)) throw error;
    if (reasons[0]?.Code === "ConditionalCheckFailed") return { claim: parseClaim(reasons[0].Item) };
    if (reasons[1]?.Code === "ConditionalCheckFailed") return { stateChanged: true };
    if (reasons.some((r) => r.Code === "TransactionConflict"))
      return { claim: await getClaim(ctx, pk, r.taskId) };
    throw error;
  }
}
