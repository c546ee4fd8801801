/*
 * Where a head stands in the indexes, and the writes that move it. A head is in at most one
 * entry: the ready partition of the "ready" index (a task ready to run: an AtTask task without a
 * result, or a wait whose event is pending), the leased partition of that index (claimed by
 * claim-next, keyed by when the claim ends), the "timer" index (a wait with a timeout and no event
 * pending, keyed by timeoutAt), or none (waiting with nothing pending, paused, finished, ...).
 */
import { type AttributeValue, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import type { StoredSnapshot } from "@sayiir/persistence-core/adapter";
import type { Context } from "./context.js";
import { expressions, type Item, isConditionFailed, N, S } from "./dynamo.js";
import type { Head } from "./items.js";
import { ATTR, type Layout } from "./layout.js";

/** An entry of the ready index (either partition) or of the timer index; undefined: none. */
export type IndexEntry = { index: "ready" | "timer"; pk: string; sk: string } | undefined;

/** What decides a head's entry: its ready task, or its wait (see StoredSnapshot). */
export type Readiness = Pick<StoredSnapshot, "readyTaskId" | "awaiting" | "updatedAt">;

/**
 * The entry of a state: a ready task in the ready partition (by updatedAt); a wait there too when
 * an event of its name is pending, else in the timer index (by timeoutAt) when it has a timeout;
 * anything else in none.
 */
export function entryOf(
  layout: Layout,
  instanceId: string,
  state: Readiness,
  eventPending: boolean,
): IndexEntry {
  const shard = layout.shardOf(instanceId);
  const ready = {
    index: "ready" as const,
    pk: layout.readyPk(shard),
    sk: layout.readySk(state.updatedAt, instanceId),
  };
  if (state.readyTaskId !== null) return ready;
  if (state.awaiting === null) return undefined;
  if (eventPending) return ready;
  const { timeoutAt } = state.awaiting;
  if (timeoutAt === null) return undefined;
  return { index: "timer", pk: layout.timerPk(shard), sk: layout.timerSk(timeoutAt, instanceId) };
}

/** Where a leased (or misplaced) head goes back to, judged on the head read and its events. */
export function homeOf(layout: Layout, head: Head, eventPending: boolean): IndexEntry {
  const awaiting = head.awaiting;
  return entryOf(
    layout,
    head.instanceId,
    {
      readyTaskId: awaiting === undefined ? (head.positionTaskId ?? null) : null,
      awaiting:
        awaiting === undefined
          ? null
          : { eventName: awaiting.eventName, nextTaskId: "", timeoutAt: awaiting.timeoutAt ?? null },
      updatedAt: head.updatedAt,
    },
    eventPending,
  );
}

/** The index attributes of an entry, for a head's put. */
export function entryAttributes(entry: IndexEntry): Item {
  if (entry === undefined) return {};
  return entry.index === "ready"
    ? { [ATTR.readyPk]: S(entry.pk), [ATTR.readySk]: S(entry.sk) }
    : { [ATTR.timerPk]: S(entry.pk), [ATTR.timerSk]: S(entry.sk) };
}

/** The attributes of a state besides its entry: the task of its position and its wait. */
export function positionAttributes(state: Pick<StoredSnapshot, "positionTaskId" | "awaiting">): Item {
  const item: Item = {};
  const taskId = state.positionTaskId ?? state.awaiting?.nextTaskId ?? null;
  if (taskId !== null) item[ATTR.position] = S(taskId);
  if (state.awaiting !== null) {
    item[ATTR.awaitedEvent] = S(state.awaiting.eventName);
    if (state.awaiting.timeoutAt !== null) item[ATTR.timeoutAt] = N(state.awaiting.timeoutAt);
  }
  return item;
}

/** The names of the index and position attributes an update may set or remove. */
const MOVABLE = [
  ATTR.readyPk,
  ATTR.readySk,
  ATTR.timerPk,
  ATTR.timerSk,
  ATTR.position,
  ATTR.awaitedEvent,
  ATTR.timeoutAt,
] as const;

/**
 * SET and REMOVE clauses (and their values, named :x_<attribute>) that make an item's index and
 * position attributes exactly `attributes`: the ones given are set, the others removed.
 */
export function replaceAttributes(attributes: Item): {
  set: string[];
  remove: string[];
  values: Record<string, AttributeValue>;
} {
  const set: string[] = [];
  const remove: string[] = [];
  const values: Record<string, AttributeValue> = {};
  for (const name of MOVABLE) {
    const value = attributes[name];
    if (value === undefined) remove.push(`#${name}`);
    else {
      set.push(`#${name} = :x_${name}`);
      values[`:x_${name}`] = value;
    }
  }
  return { set, remove, values };
}

/** The UpdateExpression of SET and REMOVE clause lists. */
export function updateExpression(set: readonly string[], remove: readonly string[]): string {
  const parts: string[] = [];
  if (set.length > 0) parts.push(`SET ${set.join(", ")}`);
  if (remove.length > 0) parts.push(`REMOVE ${remove.join(", ")}`);
  return parts.join(" ");
}

/** Where a head goes back to in the ready partition (its updatedAt order). */
export function readyEntry(ctx: Context, head: Head): NonNullable<IndexEntry> {
  const { layout } = ctx;
  return {
    index: "ready",
    pk: layout.readyPk(layout.shardOf(head.instanceId)),
    sk: layout.readySk(head.updatedAt, head.instanceId),
  };
}

/** The leased partition's entry of a claim ending (for others) at `until` (undefined: never). */
export function leasedEntry(layout: Layout, instanceId: string, until: number | undefined): IndexEntry {
  return {
    index: "ready",
    pk: layout.leasedPk(layout.shardOf(instanceId)),
    sk: layout.leaseSk(until, instanceId),
  };
}

/**
 * Moves a leased head's entry (conditional on the lease it still has): back to the ready
 * partition, to the timer index, out of both, or re-keyed in the leased partition.
 */
export async function moveLease(ctx: Context, head: Head, to: IndexEntry): Promise<void> {
  const { layout } = ctx;
  const target = entryAttributes(to);
  const set: string[] = [];
  const remove: string[] = [];
  const values: Record<string, AttributeValue> = {
    ":kpk": S(layout.leasedPk(layout.shardOf(head.instanceId))),
    ":ksk": S(head.leaseSk ?? ""),
  };
  for (const name of [ATTR.readyPk, ATTR.readySk, ATTR.timerPk, ATTR.timerSk]) {
    const value = target[name];
    if (value === undefined) remove.push(`#${name}`);
    else {
      set.push(`#${name} = :to_${name}`);
      values[`:to_${name}`] = value;
    }
  }
  try {
    await ctx.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: layout.headKey(head.pk),
        ...expressions(
          {
            UpdateExpression: updateExpression(set, remove),
            ConditionExpression: `#${ATTR.readyPk} = :kpk AND #${ATTR.readySk} = :ksk`,
          },
          values,
        ),
      }),
    );
  } catch (error) {
    if (!isConditionFailed(error)) throw error;
  }
}
