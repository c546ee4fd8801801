/*
 * Events: sendEvent, loadPendingEvents, and what the other writes need of them (the oldest
 * pending events of a name, the consuming delete, dropping them all). An event is an item under
 * the instance's partition, `E#<incarnation>#<h(name)>#<sequence>`, so the events of one name
 * come oldest first in key order; its payload is stored like an output (inline, or chunked).
 * The head counts the events sent (`evn`): sendEvent's conditional increment gives the sequence,
 * and every write that decides on pending events is conditioned on that count.
 */
import {
  type AttributeValue,
  GetItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  type TransactWriteItem,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import { type EventRef, failures, type PendingEvent } from "@sayiir/persistence-core";
import { controlRefusal, RETRY, retryOnRace } from "@sayiir/persistence-core/adapter";
import { chunkSetOf, MissingChunkError, readRef, refAttributes, type ValueRef } from "./chunks.js";
import { attemptsCondition } from "./claims.js";
import { type Context, quietly, quote, RACE_ATTEMPTS } from "./context.js";
import {
  batchWrite,
  cancellationReasons,
  expressions,
  type Item,
  isConflictOnly,
  type Key,
  N,
  num,
  queryAll,
  S,
  str,
} from "./dynamo.js";
import { eventCountCondition, getHead, type Head, parseHead, statusOf } from "./items.js";
import { ATTR, freshId, keyOf, names, STATUS, VALUE } from "./layout.js";
import { homeOf, updateExpression } from "./readiness.js";

/** An event item as read. */
export interface StoredEvent extends EventRef {
  key: Key;
  sentAt: number;
  ref: ValueRef | undefined;
  nonce: string | undefined;
}

export function parseEvent(item: Item): StoredEvent | undefined {
  const eventName = str(item, ATTR.eventName);
  const sequence = num(item, ATTR.sequence);
  if (eventName === undefined || sequence === undefined) return undefined;
  return {
    key: keyOf(item),
    eventName,
    sequence,
    sentAt: num(item, ATTR.sentAt) ?? 0,
    ref: readRef(item),
    nonce: str(item, ATTR.nonce),
  };
}

/** The oldest pending events of one name (at most `limit`), oldest first: one Query. */
export async function oldestEvents(
  ctx: Context,
  head: Head,
  eventName: string,
  limit = 1,
): Promise<StoredEvent[]> {
  if (head.incarnation === undefined || head.eventCount === 0) return [];
  const out = await ctx.send<QueryCommandOutput>(
    new QueryCommand({
      TableName: ctx.tableName,
      ConsistentRead: true,
      Limit: limit,
      ...expressions(
        { KeyConditionExpression: `#${ATTR.pk} = :pk AND begins_with(#${ATTR.sk}, :prefix)` },
        { ":pk": S(head.pk), ":prefix": S(ctx.layout.eventNamePrefix(head.incarnation, eventName)) },
      ),
    }),
  );
  return (out.Items ?? []).map(parseEvent).filter((e) => e !== undefined);
}

/** Every event item of the head's incarnation (projected to what `project` names), in key order. */
async function eventItems(ctx: Context, head: Head, project?: string): Promise<Item[]> {
  if (head.incarnation === undefined || head.eventCount === 0) return [];
  return queryAll(ctx.send, {
    TableName: ctx.tableName,
    ConsistentRead: true,
    ...expressions(
      {
        KeyConditionExpression: `#${ATTR.pk} = :pk AND begins_with(#${ATTR.sk}, :prefix)`,
        ...(project === undefined ? {} : { ProjectionExpression: project }),
      },
      { ":pk": S(head.pk), ":prefix": S(ctx.layout.eventPrefix(head.incarnation)) },
    ),
  });
}

/**
 * Best effort, after a commit that made them unreachable (a terminal write, cancel, delete): the
 * event items of the head's incarnation and their chunks. What fails is left for cleanup().
 */
export async function dropEvents(ctx: Context, head: Head): Promise<void> {
  await quietly(async () => {
    const items = await eventItems(ctx, head, names(ATTR.pk, ATTR.sk, VALUE.chunkSet, VALUE.count));
    await batchWrite(
      ctx.client,
      ctx.tableName,
      items.map((item) => ({ DeleteRequest: { Key: keyOf(item) } })),
    );
    await ctx.chunks.delete(
      items.flatMap((item) => {
        const chunkSetId = str(item, VALUE.chunkSet);
        const count = num(item, VALUE.count);
        return chunkSetId === undefined || count === undefined ? [] : [{ chunkSetId, count }];
      }),
    );
  });
}

/** The consuming write's delete of `event` (it must still be there), in the write's transaction. */
export function consumeItem(ctx: Context, event: StoredEvent): TransactWriteItem {
  return {
    Delete: {
      TableName: ctx.tableName,
      Key: event.key,
      ...expressions({ ConditionExpression: `attribute_exists(#${ATTR.pk})` }),
    },
  };
}

/** loadPendingEvents: the head, then the events of its incarnation and their payloads, oldest first. */
export async function loadPendingEvents(ctx: Context, instanceId: string): Promise<PendingEvent[]> {
  return retryOnRace(
    `loadPendingEvents of ${quote(instanceId)}`,
    async () => {
      const head = await getHead(ctx, instanceId);
      if (head === undefined) throw failures.snapshotNotFound(instanceId);
      if (head.finished) return [];
      const events = (await eventItems(ctx, head)).map(parseEvent).filter((e) => e !== undefined);
      events.sort((a, b) => a.sequence - b.sequence);
      try {
        return await Promise.all(
          events.map(async (e) => ({
            eventName: e.eventName,
            sequence: e.sequence,
            payload: e.ref === undefined ? new Uint8Array(0) : await ctx.chunks.read(e.ref),
            sentAt: e.sentAt,
          })),
        );
      } catch (error) {
        // Consumed (and its chunks deleted) while we read: read again.
        if (error instanceof MissingChunkError) return RETRY;
        throw error;
      }
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/** One event being sent: what its transaction writes. */
interface Sending {
  eventName: string;
  ref: ValueRef;
  nonce: string;
  /** A transaction whose outcome is unknown was sent (its chunks must then stay). */
  unknown: boolean;
}

/**
 * sendEvent: the payload's chunks (if large), then one transaction: the head's conditional
 * increment of its event count (the new count is the sequence; the wait for this name, if not
 * ready yet, becomes ready in the same step) and the event's put. A lost race is judged again on
 * the head the failed condition returned.
 */
export async function sendEvent(
  ctx: Context,
  instanceId: string,
  eventName: string,
  payload: Uint8Array,
): Promise<number> {
  const pk = ctx.layout.instancePk(instanceId);
  let head = await acceptingHead(ctx, instanceId, await getHead(ctx, instanceId));
  const sending: Sending = {
    eventName,
    ref: await ctx.chunks.write(payload, pk),
    nonce: freshId(),
    unknown: false,
  };
  let landed = false;
  try {
    const sequence = await retryOnRace(
      `sendEvent to ${quote(instanceId)}`,
      async () => {
        const current = head;
        const incarnation = current.incarnation ?? freshId();
        const sequence = current.eventCount + 1;
        const found = await appendEvent(ctx, current, incarnation, sequence, sending);
        if (found === null) return sequence;
        // Our own write, landed unseen (an SDK retry of it was refused): the event carries our nonce.
        if (await ours(ctx, found, incarnation, sequence, sending)) return sequence;
        head = await acceptingHead(ctx, instanceId, found);
        return RETRY;
      },
      { attempts: RACE_ATTEMPTS },
    );
    landed = true;
    return sequence;
  } finally {
    const set = chunkSetOf(sending.ref);
    if (!landed && !sending.unknown && set !== undefined) await quietly(() => ctx.chunks.delete([set]));
  }
}

/** The head, if it accepts events (controlRefusal "sendEvent": missing, or finished, refuses). */
async function acceptingHead(ctx: Context, instanceId: string, head: Head | undefined): Promise<Head> {
  const refusal = controlRefusal(
    "sendEvent",
    instanceId,
    head === undefined ? undefined : await statusOf(ctx, head),
  );
  if (refusal !== null) throw refusal;
  return head as Head;
}

/** One attempt of sendEvent's transaction (the head's update, the event's put). null: it landed; else the head as it now is. */
async function appendEvent(
  ctx: Context,
  head: Head,
  incarnation: string,
  sequence: number,
  sending: Sending,
): Promise<Head | undefined | null> {
  const items: TransactWriteItem[] = [
    { Update: countUpdate(ctx, head, incarnation, sequence, sending.eventName) },
    {
      Put: {
        TableName: ctx.tableName,
        Item: eventItem(ctx, head, incarnation, sequence, sending, ctx.now()),
        ...expressions({ ConditionExpression: `attribute_not_exists(#${ATTR.pk})` }),
      },
    },
  ];
  try {
    sending.unknown = true;
    await ctx.send(
      () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
    );
    return null;
  } catch (error) {
    const reasons = cancellationReasons(error);
    if (reasons === undefined) throw error;
    // Cancelled (conflicts included): it did not apply.
    sending.unknown = false;
    if (isConflictOnly(error)) throw error;
    if (reasons[0]?.Code === "ConditionalCheckFailed")
      return parseHead(ctx.layout, reasons[0].Item, head.instanceId);
    if (reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      return getHead(ctx, head.instanceId);
    throw error;
  }
}

/**
 * The head's update: its event count becomes `sequence` (and its incarnation is set if it had
 * none); a wait for this event that is in no ready entry goes where it now belongs (homeOf with
 * the event pending): the ready partition, or the timer index at its task's retryAt, or, held
 * after a failure without retry time, stays in none. Conditioned on what decided it: not
 * finished, the event count, the incarnation, the wait (`ev`) and whether it is in the ready
 * index; moving the wait also on updatedAt (its ready key is built from it) and the attempts.
 */
function countUpdate(ctx: Context, head: Head, incarnation: string, sequence: number, eventName: string) {
  // The wait's new home with this event pending (its task's attempts respected: a retryAt keeps
  // it in the timer index, a hold in none); a leased head goes home when its lease ends.
  const makeReady = head.awaiting?.eventName === eventName && !head.ready;
  const home = makeReady ? homeOf(ctx.layout, head, true, ctx.now()) : undefined;
  const set = [`#${ATTR.eventCount} = :seq`];
  const remove: string[] = [];
  const values: Record<string, AttributeValue> = {
    ":P": S(STATUS.inProgress),
    ":seq": N(sequence),
    ":evn": N(head.eventCount),
    ":inc": S(incarnation),
    ":ev": S(head.awaiting?.eventName ?? ""),
    ":upd": N(head.updatedAt),
  };
  if (head.incarnation === undefined) set.push(`#${ATTR.incarnation} = :inc`);
  if (home?.index === "ready") {
    set.push(`#${ATTR.readyPk} = :gpk`, `#${ATTR.readySk} = :gsk`);
    values[":gpk"] = S(home.pk);
    values[":gsk"] = S(home.sk);
    remove.push(`#${ATTR.timerPk}`, `#${ATTR.timerSk}`);
  } else if (home?.index === "timer") {
    set.push(`#${ATTR.timerPk} = :tpk`, `#${ATTR.timerSk} = :tsk`);
    values[":tpk"] = S(home.pk);
    values[":tsk"] = S(home.sk);
  }
  if (makeReady) values[":att"] = S(head.attemptsJson ?? "");
  const condition = [
    `attribute_exists(#${ATTR.pk}) AND #${ATTR.status} = :P`,
    eventCountCondition(head.eventCount),
    head.incarnation === undefined
      ? `attribute_not_exists(#${ATTR.incarnation})`
      : `#${ATTR.incarnation} = :inc`,
    head.awaiting === undefined
      ? `attribute_not_exists(#${ATTR.awaitedEvent})`
      : `#${ATTR.awaitedEvent} = :ev`,
    head.ready ? `attribute_exists(#${ATTR.readyPk})` : `attribute_not_exists(#${ATTR.readyPk})`,
    ...(makeReady ? [`#${ATTR.updatedAt} = :upd`, attemptsCondition(head)] : []),
  ].join(" AND ");
  return {
    TableName: ctx.tableName,
    Key: ctx.layout.headKey(head.pk),
    ...expressions(
      { UpdateExpression: updateExpression(set, remove), ConditionExpression: condition },
      values,
    ),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
  };
}

/** The event item: its name, sequence, sentAt, incarnation, nonce and payload. */
function eventItem(
  ctx: Context,
  head: Head,
  incarnation: string,
  sequence: number,
  sending: Sending,
  now: number,
): Item {
  return {
    ...ctx.layout.eventKey(head.pk, incarnation, sending.eventName, sequence),
    [ATTR.instanceId]: S(head.instanceId),
    [ATTR.eventName]: S(sending.eventName),
    [ATTR.sequence]: N(sequence),
    [ATTR.sentAt]: N(now),
    [ATTR.incarnation]: S(incarnation),
    [ATTR.nonce]: S(sending.nonce),
    [ATTR.writtenAt]: N(now),
    ...refAttributes(sending.ref),
  };
}

/** Did our event land after all (the head counts past it and the item carries our nonce)? */
async function ours(
  ctx: Context,
  head: Head | undefined,
  incarnation: string,
  sequence: number,
  sending: Sending,
): Promise<boolean> {
  if (head === undefined || head.incarnation !== incarnation || head.eventCount < sequence) return false;
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.eventKey(head.pk, incarnation, sending.eventName, sequence),
      ConsistentRead: true,
    }),
  );
  return str(out.Item, ATTR.nonce) === sending.nonce;
}
