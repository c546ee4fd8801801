/*
 * The pieces of completeTasks that do no I/O: how the completions of one instance are cut into
 * transactions (DynamoDB's 100-item and 4 MB limits), and the TransactWriteItems of one cut.
 * Each transaction carries the head's update once plus, per completion, the put of its result
 * item and the tombstoning of its claim item: every completion in it is one atomic step with its
 * release, and so are the completions it carries together.
 */
import type { AttributeValue, TransactWriteItem } from "@aws-sdk/client-dynamodb";
import type { StoredStatus } from "@sayiir/persistence-core/adapter";
import { chunkSetOf, refAttributes, type ValueRef } from "./chunks.js";
import { expressions, type Item, N, S } from "./dynamo.js";
import { FENCE_CONDITION, kindCondition, nonceCondition, TOMBSTONE_UPDATE } from "./items.js";
import { ATTR, type Layout, STATUS, VALUE } from "./layout.js";

/** Items one TransactWriteItems may hold. */
export const MAX_TRANSACTION_ITEMS = 100;
/** Completions per transaction: the head, then a result put and a claim update each. */
export const MAX_COMPLETIONS_PER_TRANSACTION = Math.floor((MAX_TRANSACTION_ITEMS - 1) / 2);
/**
 * Inline bytes per transaction, under the 4 MB a transaction may carry with room for keys,
 * expressions and the head (a completion's own overhead is counted in COMPLETION_OVERHEAD).
 */
export const MAX_TRANSACTION_BYTES = 3_500_000;
/** What a completion adds to a transaction besides its inline output (keys, ids, expressions). */
export const COMPLETION_OVERHEAD = 8_000;

/** What the result item of a task held when last read: the put is conditioned on it. */
export type Prior = { kind: "none" } | { kind: "inline" } | { kind: "chunks"; chunkSetId: string };

export function priorOf(ref: ValueRef | undefined): Prior {
  if (ref === undefined) return { kind: "none" };
  const set = chunkSetOf(ref);
  return set === undefined ? { kind: "inline" } : { kind: "chunks", chunkSetId: set.chunkSetId };
}

/** One completion going into a transaction. */
export interface Entry {
  taskId: string;
  token: number;
  /** Random per completion: left on the claim's tombstone, so a commit we did not see is recognised. */
  nonce: string;
  ref: ValueRef;
  prior: Prior;
}

/** The head as the transaction's conditions expect it. */
export interface HeadState {
  pk: string;
  instanceId: string;
  generation: string;
  updatedAt: number;
  ready: boolean;
  positionTaskId: string | undefined;
  /** The stored status as read (absent on older heads: then absent in the condition too). */
  kind?: StoredStatus | undefined;
  /**
   * The nonce of the transition or step that last changed the head in place, as read: a result
   * written against a head a step has moved since is judged again (its position changed).
   */
  nonce?: string | undefined;
  /** A wait for an event (its next task is positionTaskId): it ends when that task completes. */
  awaiting?: unknown;
  /** In the timer index. */
  timer?: boolean;
  /** In the leased partition of the ready index (claimed by claim-next): its lease sort key. */
  leaseSk?: string | undefined;
  /** Its schedule (absent: "default", 3, ready at its write). */
  queue?: string;
  priority?: number;
  readyAt?: number | undefined;
}

/** Cuts entries into consecutive groups under both transaction limits (never an empty group). */
export function cut<T>(entries: readonly T[], bytes: (entry: T) => number): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let size = 0;
  for (const entry of entries) {
    const weight = bytes(entry) + COMPLETION_OVERHEAD;
    if (
      group.length > 0 &&
      (group.length >= MAX_COMPLETIONS_PER_TRANSACTION || size + weight > MAX_TRANSACTION_BYTES)
    ) {
      groups.push(group);
      group = [];
      size = 0;
    }
    group.push(entry);
    size += weight;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/** Bytes a value puts into the transaction itself (chunks are written before it, outside it). */
export const inlineBytes = (ref: ValueRef): number => ("inline" in ref ? ref.inline.byteLength : 0);

interface TransactionArgs {
  tableName: string;
  layout: Layout;
  head: HeadState;
  entries: readonly Entry[];
  now: number;
  tombstoneTtl: number;
}

/**
 * The transaction of one group: the head updated as saveTaskResult updates it (`last` = the last
 * entry's task; out of the ready index when the position's task completes, else re-keyed (unless leased) with the
 * new updatedAt), each result put (conditioned on the result item read), and each claim turned
 * into a tombstone, conditioned as a fence is (that token, held, not expired on our clock).
 * Returns the head state the transaction leaves, for the next group of the same instance.
 */
export function completionTransaction(args: TransactionArgs): {
  items: TransactWriteItem[];
  after: HeadState;
} {
  const { head, entries, now } = args;
  const last = entries[entries.length - 1];
  if (last === undefined) throw new Error("a completion transaction needs at least one entry");
  const positionDone =
    head.positionTaskId !== undefined && entries.some((e) => e.taskId === head.positionTaskId);
  const update = headUpdate(args.layout, head, last.taskId, positionDone, now);
  const items: TransactWriteItem[] = [
    {
      Update: {
        TableName: args.tableName,
        Key: args.layout.headKey(head.pk),
        ...expressions(
          { UpdateExpression: update.update, ConditionExpression: update.condition },
          update.values,
        ),
      },
    },
  ];
  for (const entry of entries) {
    items.push(resultPut(args, entry), claimTombstone(args, entry));
  }
  const waitDone = positionDone && head.awaiting !== undefined;
  return {
    items,
    after: {
      ...head,
      updatedAt: update.updatedAt,
      ready: head.ready && !positionDone,
      leaseSk: positionDone ? undefined : head.leaseSk,
      ...(waitDone ? { awaiting: undefined, timer: false } : positionDone ? { timer: false } : {}),
    },
  };
}

/**
 * The head's update when `lastTaskId` completes (saveTaskResult's, and each completeTasks
 * transaction's): `last` and updatedAt = max(stored, now); out of the ready index when the
 * position's task completed (and, for a wait, out of the timer index with its wait: its next task
 * has a result), else re-keyed in the ready partition with the new updatedAt (a leased head stays
 * in the leased partition). Conditioned on the
 * head as read: same generation, not finished (a Paused head takes results), same status and
 * nonce (no transition or step since), updatedAt not past the new one, in the ready and timer
 * indexes exactly when it was read there.
 */
export function headUpdate(
  layout: Layout,
  head: HeadState,
  lastTaskId: string,
  positionDone: boolean,
  now: number,
): { update: string; condition: string; values: Record<string, AttributeValue>; updatedAt: number } {
  const updatedAt = Math.max(head.updatedAt, now);
  const values: Record<string, AttributeValue> = {
    ":gen": S(head.generation),
    ":P": S(STATUS.inProgress),
    ":upd": N(updatedAt),
    ":last": S(lastTaskId),
    ":kind": S(head.kind ?? ""),
    ":nc_read": S(head.nonce ?? ""),
  };
  let update = `SET #${ATTR.lastCompleted} = :last, #${ATTR.updatedAt} = :upd`;
  const remove: string[] = [];
  if (head.ready && positionDone) remove.push(`#${ATTR.readyPk}`, `#${ATTR.readySk}`);
  else if (head.ready && head.leaseSk === undefined) {
    // Re-keyed in the ready partition with the new updatedAt. A leased head stays where claim-next
    // put it: its lease still runs, and once it ends discovery orders it by the key its head gives
    // (candidates.ts: homeKey), never by the time of this write (moving it to the ready partition
    // served a timed-out wait by this write's time instead of its timeout: found by the fuzzer).
    update += `, #${ATTR.readyPk} = :gpk, #${ATTR.readySk} = :gsk`;
    values[":gpk"] = S(layout.readyPk(layout.shardOf(head.instanceId), head.queue));
    values[":gsk"] = S(layout.readySk(head.readyAt ?? updatedAt, head.priority ?? 3, head.instanceId));
  }
  if (positionDone && head.awaiting !== undefined) {
    remove.push(`#${ATTR.awaitedEvent}`, `#${ATTR.timeoutAt}`, `#${ATTR.timerPk}`, `#${ATTR.timerSk}`);
  } else if (positionDone && head.timer === true) {
    // A task with a future runAt or retryAt that completed anyway (claimed by claimTask).
    remove.push(`#${ATTR.timerPk}`, `#${ATTR.timerSk}`);
  }
  if (remove.length > 0) update += ` REMOVE ${remove.join(", ")}`;
  const condition =
    `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen AND #${ATTR.status} = :P AND ` +
    `#${ATTR.updatedAt} <= :upd AND ` +
    (head.ready ? `attribute_exists(#${ATTR.readyPk})` : `attribute_not_exists(#${ATTR.readyPk})`) +
    ` AND ${kindCondition(head.kind)} AND ${nonceCondition(head.nonce)}` +
    ` AND ${head.timer === true ? `attribute_exists(#${ATTR.timerPk})` : `attribute_not_exists(#${ATTR.timerPk})`}`;
  return { update, condition, values, updatedAt };
}

/** A task's result item under a generation: its task id, generation, written-at and value. */
export function resultItem(
  layout: Layout,
  pk: string,
  generation: string,
  taskId: string,
  now: number,
  ref: ValueRef,
): Item {
  return {
    ...layout.resultKey(pk, generation, taskId),
    [ATTR.taskId]: S(taskId),
    [ATTR.generation]: S(generation),
    [ATTR.writtenAt]: N(now),
    ...refAttributes(ref),
  };
}

/** The put of an entry's result item, conditioned on what the item held when read. */
function resultPut(args: TransactionArgs, entry: Entry): TransactWriteItem {
  const { head, layout, now } = args;
  return {
    Put: {
      TableName: args.tableName,
      Item: resultItem(layout, head.pk, head.generation, entry.taskId, now, entry.ref),
      ...priorCondition(entry.prior),
    },
  };
}

/** The condition of a result item's put: it still holds what was read (nothing, inline, that chunk set). */
export function priorCondition(prior: Prior) {
  return prior.kind === "none"
    ? expressions({ ConditionExpression: `attribute_not_exists(#${ATTR.pk})` })
    : prior.kind === "inline"
      ? expressions({
          ConditionExpression: `attribute_exists(#${ATTR.pk}) AND attribute_not_exists(#${VALUE.chunkSet})`,
        })
      : expressions({ ConditionExpression: `#${VALUE.chunkSet} = :c` }, { ":c": S(prior.chunkSetId) });
}

/** The entry's claim turned into a tombstone carrying its nonce, conditioned as a fence is. */
function claimTombstone(args: TransactionArgs, entry: Entry): TransactWriteItem {
  return {
    Update: {
      TableName: args.tableName,
      Key: args.layout.claimKey(args.head.pk, entry.taskId),
      ...expressions(
        {
          UpdateExpression: `${TOMBSTONE_UPDATE}, #${ATTR.completedBy} = :cn`,
          ConditionExpression: FENCE_CONDITION,
        },
        { ":tok": N(entry.token), ":now": N(args.now), ":ttl": N(args.tombstoneTtl), ":cn": S(entry.nonce) },
      ),
    },
  };
}

/**
 * Runs `work` on every item, at most `limit` at a time, and waits for all of them; then throws
 * the first failure, if any (the others were not abandoned half-way).
 */
export async function settleAll<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { reason: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failure ??= { reason: error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure !== undefined) throw failure.reason;
}
