/*
 * The items every concern reads: the head of a snapshot and the claim item of a task, parsed
 * into plain objects, plus the conditions a fenced write and a release put on a claim item.
 */
import { GetItemCommand, type TransactWriteItem } from "@aws-sdk/client-dynamodb";
import {
  BackendError,
  DEFAULT_PRIORITY,
  DEFAULT_QUEUE,
  EMPTY_BYTES,
  type Fence,
  isClaimLive,
  type TaskAttempts,
} from "@sayiir/persistence-core";
import {
  fromStoredParts,
  type HeldClaimView,
  REVOKED_EXPIRY,
  type StoredStatus,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import { readRef, type ValueRef } from "./chunks.js";
import type { Context } from "./context.js";
import { quote } from "./context.js";
import { expressions, type Item, type Key, N, num, queryAll, S, str } from "./dynamo.js";
import { ATTR, HEAD_VALUE, keyOf, type Layout, names, STATUS } from "./layout.js";

/** A snapshot's head item. */
export interface Head {
  pk: string;
  instanceId: string;
  generation: string;
  /** Completed, Failed or Cancelled. */
  finished: boolean;
  /** When it first finished (absent while unfinished, and on finished heads no migration reached). */
  finishedAt: number | undefined;
  /** The stored status (absent on heads written before it was stored: see statusOf). */
  kind: StoredStatus | undefined;
  paused: boolean;
  /** The incarnation its events live under (absent on older heads and until an event is sent). */
  incarnation: string | undefined;
  /** Events sent to this incarnation so far (the last sequence given; 0: none). */
  eventCount: number;
  /** An InProgress wait for an event whose next task (positionTaskId) has no result yet. */
  awaiting: { eventName: string; timeoutAt: number | undefined } | undefined;
  /** In the timer index (a wait with a timeout and no event pending). */
  timer: boolean;
  /** The task of an AtTask position, or the next task of a wait (see awaiting). */
  positionTaskId: string | undefined;
  lastCompletedTaskId: string | undefined;
  updatedAt: number;
  definitionHash: string;
  /** In the ready index (either partition). */
  ready: boolean;
  /** In the leased partition (claimed by claim-next): its lease sort key. */
  leaseSk: string | undefined;
  /** The index keys as stored (GPK, GSK, TSK): what a cancel conditions on (claim-next moves them). */
  indexKeys: { readyPk: string | undefined; readySk: string | undefined; timerSk: string | undefined };
  /**
   * The nonce of the cancel, pause or resume that last changed the head in place (carried over by
   * saves; absent on heads no transition ever changed). With the generation, the head's version:
   * a change in place changes it, a save changes the generation.
   */
  nonce: string | undefined;
  header: ValueRef | undefined;
  /** The initial input stored as a value of its own (older heads carry it in the header). */
  input: ValueRef | undefined;
  /** The schedule of its ready or awaited task (older heads: "default" and 3). */
  queue: string;
  priority: number;
  /** When the position's task is ready by its schedule (runAt / retryAt); undefined: at its write. */
  readyAt: number | undefined;
  /** The position's task failed without a retry time: in no index until a save. */
  held: boolean;
  /** The attempts attribute as stored (undefined: none): what attempt writes condition on. */
  attemptsJson: string | undefined;
  attempts: StoredAttempt[];
  /** In the timer index: its due time (undefined: not there). */
  timerDue: number | undefined;
}

/** One task's attempts as stored on the head. */
export type StoredAttempt = { taskId: string } & TaskAttempts;

/** The attempts of one task (undefined: none recorded). */
export function attemptsOf(head: Head, taskId: string): StoredAttempt | undefined {
  return head.attempts.find((a) => a.taskId === taskId);
}

/** The attempts attribute of a list (empty: none, the attribute removed). */
export function encodeAttempts(attempts: readonly StoredAttempt[]): string | undefined {
  return attempts.length === 0 ? undefined : JSON.stringify(attempts);
}

function decodeAttempts(json: string | undefined, instanceId: string): StoredAttempt[] {
  if (json === undefined) return [];
  try {
    return JSON.parse(json) as StoredAttempt[];
  } catch {
    throw new BackendError(`the attempts of ${quote(instanceId)} are not readable`);
  }
}

/** A claim item: a live claim, or a tombstone (no worker) that keeps the last token. */
export interface StoredClaim {
  token: number;
  workerId: string | undefined;
  claimedAt: number | undefined;
  expiresAt: number | undefined;
  /** Random per claim attempt: tells our own landed write from another caller's identical one. */
  nonce: string | undefined;
  /** When a refusal of its holder marked it lapsed (see lapse.ts), if one did. */
  lapsed?: number | undefined;
}

/**
 * The claim's fence condition: that token, held, not lapsed, not expired on the writer's clock
 * (`:tok`, `:now`).
 */
export const FENCE_CONDITION =
  `#${ATTR.token} = :tok AND attribute_exists(#${ATTR.worker}) AND attribute_not_exists(#${ATTR.lapsed}) AND ` +
  `(attribute_not_exists(#${ATTR.expiresAt}) OR #${ATTR.expiresAt} > :now)`;

/** Turns a claim item into a tombstone: no holder, the token kept, deleted by TTL (`:ttl`). */
export const TOMBSTONE_UPDATE = `REMOVE ${names(ATTR.worker, ATTR.claimedAt, ATTR.expiresAt, ATTR.nonce, ATTR.lapsed)} SET #${ATTR.ttl} = :ttl`;

/** Parses a head item; one that names another instance id (a hash collision) is an error. */
export function parseHead(layout: Layout, item: Item | undefined, instanceId: string): Head | undefined {
  if (item === undefined || str(item, ATTR.pk) === undefined) return undefined;
  const iid = str(item, ATTR.instanceId);
  if (iid !== instanceId) {
    throw new BackendError(
      `the head item of ${quote(instanceId)} belongs to another instance id (hash collision?)`,
    );
  }
  const readyPk = str(item, ATTR.readyPk);
  const eventName = str(item, ATTR.awaitedEvent);
  const kind = str(item, ATTR.kind) as StoredStatus | undefined;
  const timerSk = str(item, ATTR.timerSk);
  return {
    pk: str(item, ATTR.pk) as string,
    instanceId: iid,
    generation: str(item, ATTR.generation) ?? "",
    finished: str(item, ATTR.status) === STATUS.finished,
    finishedAt: num(item, ATTR.finishedAt),
    kind,
    paused: kind === "Paused",
    incarnation: str(item, ATTR.incarnation),
    eventCount: num(item, ATTR.eventCount) ?? 0,
    awaiting: eventName === undefined ? undefined : { eventName, timeoutAt: num(item, ATTR.timeoutAt) },
    timer: str(item, ATTR.timerPk) !== undefined,
    positionTaskId: str(item, ATTR.position),
    lastCompletedTaskId: str(item, ATTR.lastCompleted),
    updatedAt: num(item, ATTR.updatedAt) ?? 0,
    definitionHash: str(item, ATTR.definitionHash) ?? "",
    ready: readyPk !== undefined,
    leaseSk: readyPk !== undefined && layout.isLeasedPk(readyPk) ? str(item, ATTR.readySk) : undefined,
    indexKeys: { readyPk, readySk: str(item, ATTR.readySk), timerSk: str(item, ATTR.timerSk) },
    nonce: str(item, ATTR.nonce),
    header: readRef(item, HEAD_VALUE.header),
    input: readRef(item, HEAD_VALUE.input),
    queue: str(item, ATTR.queue) ?? DEFAULT_QUEUE,
    priority: num(item, ATTR.priority) ?? DEFAULT_PRIORITY,
    readyAt: num(item, ATTR.readyAt),
    held: item[ATTR.held] !== undefined,
    attemptsJson: str(item, ATTR.attempts),
    attempts: decodeAttempts(str(item, ATTR.attempts), iid),
    timerDue: timerSk === undefined ? undefined : layout.parseTimerSk(timerSk).due,
  };
}

/** Completed and Failed keep no results; InProgress, Paused and Cancelled do. */
export function keepsResults(head: Head): boolean {
  return !head.finished || head.kind === "Cancelled";
}

/**
 * The stored status. A head written before the status was stored has only `st`: in progress, or
 * finished, then its header says which (read only in that case).
 */
export async function statusOf(ctx: Context, head: Head): Promise<StoredStatus> {
  if (head.kind !== undefined) return head.kind;
  if (!head.finished) return "InProgress";
  const header = head.header === undefined ? EMPTY_BYTES : await ctx.chunks.read(head.header);
  const snapshot = fromStoredParts({
    instanceId: head.instanceId,
    header,
    initialInput: null,
    results: [],
    lastCompletedTaskId: null,
  });
  return snapshot.state.kind;
}

/** The condition that the head's status is still `kind` as read (absent on older heads). */
export function kindCondition(kind: StoredStatus | undefined): string {
  return kind === undefined ? `attribute_not_exists(#${ATTR.kind})` : `#${ATTR.kind} = :kind`;
}

/** The condition that the head's event count is still `count` as read (absent: 0). */
export function eventCountCondition(count: number): string {
  return count === 0 ? `attribute_not_exists(#${ATTR.eventCount})` : `#${ATTR.eventCount} = :evn`;
}

/**
 * The condition that the head's transition nonce is still `nonce` as read (`:nc_read`; absent:
 * none). With the generation's condition, nothing changed the head's state since it was read.
 */
export function nonceCondition(nonce: string | undefined): string {
  return nonce === undefined ? `attribute_not_exists(#${ATTR.nonce})` : `#${ATTR.nonce} = :nc_read`;
}

/** The head item as stored (strongly consistent). */
export async function getHeadItem(ctx: Context, pk: string): Promise<Item | undefined> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({ TableName: ctx.tableName, Key: ctx.layout.headKey(pk), ConsistentRead: true }),
  );
  return out.Item;
}

export async function getHead(ctx: Context, instanceId: string): Promise<Head | undefined> {
  const item = await getHeadItem(ctx, ctx.layout.instancePk(instanceId));
  return parseHead(ctx.layout, item, instanceId);
}

export function parseClaim(item: Item | undefined): StoredClaim | undefined {
  const token = num(item, ATTR.token);
  if (item === undefined || token === undefined) return undefined;
  return {
    token,
    workerId: str(item, ATTR.worker),
    claimedAt: num(item, ATTR.claimedAt),
    expiresAt: num(item, ATTR.expiresAt),
    nonce: str(item, ATTR.nonce),
    lapsed: num(item, ATTR.lapsed),
  };
}

export async function getClaim(ctx: Context, pk: string, taskId: string): Promise<StoredClaim | undefined> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.claimKey(pk, taskId),
      ConsistentRead: true,
    }),
  );
  return parseClaim(out.Item);
}

/**
 * The claim as the kit's refusals see it: held (a worker) with its token and expiry, or
 * undefined (no claim item, or a tombstone).
 */
export function heldView(
  claim: StoredClaim | undefined,
): (NonNullable<HeldClaimView> & { token: number }) | undefined {
  if (claim === undefined || claim.workerId === undefined) return undefined;
  // A lapsed claim is expired on every clock, as a revoked one (its holder was told so).
  const expiresAt = claim.lapsed !== undefined ? REVOKED_EXPIRY : (claim.expiresAt ?? null);
  return { token: claim.token, workerId: claim.workerId, expiresAt };
}

/**
 * Held, and not yet takeable by others: others wait `expiresAt + skew budget` on their clock,
 * that is they judge liveness at `now - skew budget` (the holder judges it at `now`).
 */
export function liveForOthers(ctx: Context, claim: StoredClaim | undefined, now: number): boolean {
  // By its expiry, lapsed or not: what a takeover's condition requires (expiresAt <= :cut).
  if (claim === undefined || claim.workerId === undefined) return false;
  return isClaimLive({ expiresAt: claim.expiresAt ?? null }, now - ctx.options.skewMs);
}

/** The fenced task's claim as stored now, and the clock read after it: what fenceHolds judges. */
export async function fenceView(
  ctx: Context,
  pk: string,
  fence: Fence,
): Promise<{ claim: ReturnType<typeof heldView>; now: number }> {
  const claim = heldView(await getClaim(ctx, pk, fence.taskId));
  return { claim, now: ctx.now() };
}

/** The condition a fenced write puts on the claim item (evaluated in the same transaction). */
export function fenceCheck(ctx: Context, pk: string, fence: Fence, now: number): TransactWriteItem {
  return {
    ConditionCheck: {
      TableName: ctx.tableName,
      Key: ctx.layout.claimKey(pk, fence.taskId),
      ...expressions({ ConditionExpression: FENCE_CONDITION }, { ":tok": N(fence.token), ":now": N(now) }),
      ReturnValuesOnConditionCheckFailure: "ALL_OLD",
    },
  };
}

/** What a write is judged on (the kit's WriteView): the head read, and the fenced claim if any. */
export async function writeView(
  ctx: Context,
  pk: string,
  fence: Fence | undefined,
  head: Head | undefined,
): Promise<WriteView> {
  const { claim, now } =
    fence === undefined ? { claim: undefined, now: ctx.now() } : await fenceView(ctx, pk, fence);
  return {
    found: head !== undefined,
    finished: head?.finished ?? false,
    cancelled: head?.kind === "Cancelled",
    paused: head?.paused ?? false,
    claim,
    now,
  };
}

/** A claim item of an instance as a whole-instance write reads it (deleteSnapshot, cancelWorkflow). */
export interface ClaimRef {
  key: Key;
  token: number;
  /** It has a holder (else: a tombstone). */
  held: boolean;
  expiresAt: number | undefined;
}

/** Every claim item (live or tombstone) of an instance. */
export async function claimItems(ctx: Context, pk: string): Promise<ClaimRef[]> {
  const items = await queryAll(ctx.send, {
    TableName: ctx.tableName,
    ConsistentRead: true,
    ...expressions(
      {
        KeyConditionExpression: `#${ATTR.pk} = :pk AND begins_with(#${ATTR.sk}, :prefix)`,
        ProjectionExpression: names(ATTR.pk, ATTR.sk, ATTR.token, ATTR.worker, ATTR.expiresAt),
      },
      { ":pk": S(pk), ":prefix": S(ctx.layout.claimPrefix()) },
    ),
  });
  const out: ClaimRef[] = [];
  for (const item of items) {
    const token = num(item, ATTR.token);
    if (token === undefined) continue;
    out.push({
      key: keyOf(item),
      token,
      held: str(item, ATTR.worker) !== undefined,
      expiresAt: num(item, ATTR.expiresAt),
    });
  }
  return out;
}

/** The result items of one generation of an instance. */
export async function resultItems(ctx: Context, pk: string, generation: string): Promise<Item[]> {
  return queryAll(ctx.send, {
    TableName: ctx.tableName,
    ConsistentRead: true,
    ...expressions(
      { KeyConditionExpression: `#${ATTR.pk} = :pk AND begins_with(#${ATTR.sk}, :prefix)` },
      { ":pk": S(pk), ":prefix": S(ctx.layout.resultPrefix(generation)) },
    ),
  });
}
