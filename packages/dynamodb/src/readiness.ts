/*
 * Where a head stands in the indexes, and the writes that move it. A head is in at most one
 * entry: the ready partition of the "ready" index (a task ready to run: an AtTask task without a
 * result, or a wait whose event is pending), the leased partition of that index (claimed by
 * claim-next, keyed by when the claim ends), the "timer" index (a wait with a timeout and no event
 * pending, keyed by timeoutAt; a task whose runAt or retryAt is still ahead, keyed by it), or none
 * (waiting with nothing pending, held after a failure without retry time, paused, finished, ...).
 * Every partition is per queue (see layout.ts).
 */
import { type AttributeValue, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { DEFAULT_PRIORITY, DEFAULT_QUEUE } from "@sayiir/persistence-core";
import type { StoredSnapshot } from "@sayiir/persistence-core/adapter";
import type { Context } from "./context.js";
import { expressions, type Item, isConditionFailed, N, S } from "./dynamo.js";
import type { Head } from "./items.js";
import { ATTR, type Layout } from "./layout.js";

/** An entry of the ready index (either partition) or of the timer index; undefined: none. */
export type IndexEntry = { index: "ready" | "timer"; pk: string; sk: string } | undefined;

/**
 * What decides a head's entry: its ready task or its wait (see StoredSnapshot), when it was
 * written, and its schedule: queue, priority, `readyAt` (the latest of runAt and the task's
 * retryAt; undefined: at its write) and `held` (a failure without retry time).
 */
export type Readiness = Pick<StoredSnapshot, "readyTaskId" | "awaiting" | "updatedAt"> & Schedule;

export interface Schedule {
  queue: string;
  priority: number;
  readyAt: number | undefined;
  held: boolean;
}

/**
 * The schedule of a stored snapshot: its position's, with the attempts of its task (the ready
 * task, or the task after its open wait: a wait's readyAt is its task's retryAt).
 */
export function scheduleOfStored(stored: StoredSnapshot): Schedule {
  return scheduleOfTask(
    stored.schedule,
    stored.attempts,
    stored.readyTaskId ?? stored.awaiting?.nextTaskId ?? null,
  );
}

/** The schedule of a position's task (null: none): its position's schedule and its attempts. */
export function scheduleOfTask(
  schedule: StoredSnapshot["schedule"],
  attempts: StoredSnapshot["attempts"],
  taskId: string | null,
): Schedule {
  const { runAt, priority, queue } = schedule;
  const retryAt = taskId === null ? undefined : attempts.find((a) => a.taskId === taskId)?.retryAt;
  const times = [runAt, retryAt].filter((t): t is number => typeof t === "number");
  return {
    queue,
    priority,
    readyAt: times.length === 0 ? undefined : Math.max(...times),
    held: taskId !== null && retryAt === null,
  };
}

/** The schedule a head carries. */
export function scheduleOfHead(head: Head): Schedule {
  return { queue: head.queue, priority: head.priority, readyAt: head.readyAt, held: head.held };
}

/**
 * The entry of a state: a ready task in the ready partition of its queue, keyed by its discovery
 * key (readyAt, else its write; see Layout.readySk), or in the timer index while its runAt or
 * retryAt is in the future (held: in none); a wait (held: in none) in the ready partition when an
 * event of its name is pending (keyed by its write), else in the timer index (by timeoutAt) when
 * it has a timeout, else in none; a wait whose task has a retryAt is in the timer index at the
 * later of that and its own time (the contract's "never before retryAt"); anything else in none.
 */
export function entryOf(
  layout: Layout,
  instanceId: string,
  state: Readiness,
  eventPending: boolean,
  now: number,
): IndexEntry {
  const shard = layout.shardOf(instanceId);
  const { queue, priority } = state;
  const readyAt = (time: number) => ({
    index: "ready" as const,
    pk: layout.readyPk(shard, queue),
    sk: layout.readySk(time, priority, instanceId),
  });
  const timer = (due: number) => ({
    index: "timer" as const,
    pk: layout.timerPk(shard, queue),
    sk: layout.timerSk(due, priority, instanceId),
  });
  if (state.readyTaskId !== null) {
    if (state.held) return undefined;
    if (state.readyAt === undefined) return readyAt(state.updatedAt);
    return state.readyAt > now ? timer(state.readyAt) : readyAt(state.readyAt);
  }
  if (state.awaiting === null || state.held) return undefined;
  // The wait's own time (none with an event pending), then not before its task's retryAt.
  let due: number | undefined;
  if (!eventPending) {
    if (state.awaiting.timeoutAt === null) return undefined;
    due = state.awaiting.timeoutAt;
  }
  if (state.readyAt !== undefined) due = Math.max(due ?? state.readyAt, state.readyAt);
  return due === undefined ? readyAt(state.updatedAt) : timer(due);
}

/** Where a leased (or misplaced) head goes back to, judged on the head read and its events. */
export function homeOf(layout: Layout, head: Head, eventPending: boolean, now: number): IndexEntry {
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
      ...scheduleOfHead(head),
    },
    eventPending,
    now,
  );
}

/** The index attributes of an entry, for a head's put. */
export function entryAttributes(entry: IndexEntry): Item {
  if (entry === undefined) return {};
  return entry.index === "ready"
    ? { [ATTR.readyPk]: S(entry.pk), [ATTR.readySk]: S(entry.sk) }
    : { [ATTR.timerPk]: S(entry.pk), [ATTR.timerSk]: S(entry.sk) };
}

/**
 * The attributes of a state besides its entry: the task of its position, its wait and its
 * schedule (queue and priority only when not the defaults).
 */
export function positionAttributes(
  state: Pick<StoredSnapshot, "positionTaskId" | "awaiting"> & Schedule,
): Item {
  const item: Item = {};
  const taskId = state.positionTaskId ?? state.awaiting?.nextTaskId ?? null;
  if (taskId !== null) {
    item[ATTR.position] = S(taskId);
    if (state.queue !== DEFAULT_QUEUE) item[ATTR.queue] = S(state.queue);
    if (state.priority !== DEFAULT_PRIORITY) item[ATTR.priority] = N(state.priority);
    if (state.readyAt !== undefined) item[ATTR.readyAt] = N(state.readyAt);
    if (state.held) item[ATTR.held] = { BOOL: true };
  }
  if (state.awaiting !== null) {
    item[ATTR.awaitedEvent] = S(state.awaiting.eventName);
    if (state.awaiting.timeoutAt !== null) item[ATTR.timeoutAt] = N(state.awaiting.timeoutAt);
  }
  return item;
}

/** The names of the index and position attributes an update may set or remove. */
/** The keys of a head's entry in the ready (or leased) and timer indexes. */
export const INDEX_KEYS = [ATTR.readyPk, ATTR.readySk, ATTR.timerPk, ATTR.timerSk] as const;

const MOVABLE = [
  ...INDEX_KEYS,
  ATTR.position,
  ATTR.awaitedEvent,
  ATTR.timeoutAt,
  ATTR.queue,
  ATTR.priority,
  ATTR.readyAt,
  ATTR.held,
] as const;

/**
 * SET and REMOVE clauses (and their values, named :x_<attribute>) that make an item's index and
 * position attributes exactly `attributes`: the ones given are set, the others removed.
 */
export function replaceAttributes(
  attributes: Item,
  names: readonly string[] = MOVABLE,
): {
  set: string[];
  remove: string[];
  values: Record<string, AttributeValue>;
} {
  const set: string[] = [];
  const remove: string[] = [];
  const values: Record<string, AttributeValue> = {};
  for (const name of names) {
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

/** The leased partition's entry of a claim ending (for others) at `until` (undefined: never). */
export function leasedEntry(
  layout: Layout,
  instanceId: string,
  queue: string,
  until: number | undefined,
): IndexEntry {
  return {
    index: "ready",
    pk: layout.leasedPk(layout.shardOf(instanceId), queue),
    sk: layout.leaseSk(until, instanceId),
  };
}

/**
 * Moves a leased head's entry (conditional on the lease it still has): back to the ready
 * partition, to the timer index, out of both, or re-keyed in the leased partition.
 */
export async function moveLease(ctx: Context, head: Head, to: IndexEntry): Promise<void> {
  const { layout } = ctx;
  const { set, remove, values } = replaceAttributes(entryAttributes(to), INDEX_KEYS);
  values[":kpk"] = S(layout.leasedPk(layout.shardOf(head.instanceId), head.queue));
  values[":ksk"] = S(head.leaseSk ?? "");
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
