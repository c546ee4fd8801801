/*
 * deleteSnapshot: the head's delete and every claim's tombstone in one transaction, recognised by
 * a marker item when its response is lost; then the deleted generation and the events of the
 * deleted incarnation are dropped (a head created again has a new incarnation: it never sees them).
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  GetItemCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { failures } from "@sayiir/persistence-core";
import { RETRY, retryOnRace } from "@sayiir/persistence-core/adapter";
import { MAX_TRANSACTION_ITEMS } from "./completion-plan.js";
import { type Context, quietly, quote, RACE_ATTEMPTS, tombstoneTtl } from "./context.js";
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
import { dropEvents } from "./events.js";
import { type ClaimRef, claimItems, getHead, type Head, parseHead, TOMBSTONE_UPDATE } from "./items.js";
import { ATTR, freshId } from "./layout.js";
import { dropGeneration } from "./snapshots.js";

/**
 * deleteSnapshot: deletes the head and tombstones every claim in ONE transaction, conditioned on
 * the head's generation and on each claim still holding the token read (a claim taken meanwhile
 * makes it retry), so a failure can never leave the head gone and a pre-delete claim live. With
 * more claims than fit a transaction, the claims are tombstoned first and the head deleted after
 * (a failure in between leaves the instance with its claims released, never the reverse).
 */
export async function deleteSnapshot(ctx: Context, instanceId: string): Promise<void> {
  const head = await getHead(ctx, instanceId);
  if (head === undefined || !(await deleteInstance(ctx, head, () => true)))
    throw failures.snapshotNotFound(instanceId);
}

/**
 * Deletes the instance whose head was read as `first` (as deleteSnapshot describes), then its
 * results, chunks and events, as long as `eligible` holds for the head as read again after a
 * race (deleteSnapshot: always; purgeFinished: still finished before its cut-off). True when this
 * call deleted it; false when the head is gone (deleted by someone else: not ours to count) or
 * no longer eligible.
 */
export async function deleteInstance(
  ctx: Context,
  first: Head,
  eligible: (head: Head) => boolean,
): Promise<boolean> {
  const pk = first.pk;
  const op = freshId();
  let head: Head | undefined = first;
  let target = first;
  const deleted = await retryOnRace(
    `deleting ${quote(first.instanceId)}`,
    async () => {
      target = head as Head;
      const claims = await claimItems(ctx, pk);
      const outcome =
        claims.length > MAX_TRANSACTION_ITEMS - 2
          ? await deleteHeadAfterClaims(ctx, target, claims)
          : await deleteInOneTransaction(ctx, target, claims, op);
      if (outcome === "deleted") return true;
      if (outcome !== "retry") head = outcome.head;
      if (head === undefined) {
        // Deleted by a concurrent call (or by an attempt of ours: see deleteInOneTransaction):
        // either way, no claim read while the head existed stays live.
        if (outcome !== "retry" && outcome.tombstone) await tombstoneAll(ctx, claims);
        return false;
      }
      return eligible(head) ? RETRY : false;
    },
    { attempts: RACE_ATTEMPTS },
  );
  if (!deleted) return false;
  // Committed. Its results and chunks are garbage, and the marker has served (else: TTL, cleanup()).
  await quietly(async () => {
    await ctx.send(
      new DeleteItemCommand({
        TableName: ctx.tableName,
        Key: ctx.layout.deleteMarkerKey(pk),
        ...expressions({ ConditionExpression: `#${ATTR.op} = :op` }, { ":op": S(op) }),
      }),
    );
  });
  await quietly(() => dropGeneration(ctx, target));
  await dropEvents(ctx, target);
  return true;
}

/** What one delete attempt found: done, a head that changed (re-read), or a claim race. */
type DeleteOutcome = "deleted" | "retry" | { head: Head | undefined; tombstone: boolean };

/** The head's delete, conditioned on the generation read. */
function headDelete(ctx: Context, head: Head) {
  return {
    TableName: ctx.tableName,
    Key: ctx.layout.headKey(head.pk),
    ...expressions({ ConditionExpression: `#${ATTR.generation} = :gen` }, { ":gen": S(head.generation) }),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
  };
}

/** More claims than a transaction holds: tombstones them first, then deletes the head. */
async function deleteHeadAfterClaims(ctx: Context, head: Head, claims: ClaimRef[]): Promise<DeleteOutcome> {
  await tombstoneAll(ctx, claims);
  try {
    await ctx.send(new DeleteItemCommand(headDelete(ctx, head)));
    return "deleted";
  } catch (error) {
    if (!isConditionFailed(error)) throw error;
    return { head: parseHead(ctx.layout, error.Item, head.instanceId), tombstone: false };
  }
}

/** The head's delete, the marker and every claim's tombstone (or check) in one transaction. */
async function deleteInOneTransaction(
  ctx: Context,
  head: Head,
  claims: ClaimRef[],
  op: string,
): Promise<DeleteOutcome> {
  const now = ctx.now();
  const ttl = N(tombstoneTtl(now));
  const items: TransactWriteItem[] = [
    { Delete: headDelete(ctx, head) },
    {
      Put: {
        TableName: ctx.tableName,
        Item: {
          ...ctx.layout.deleteMarkerKey(head.pk),
          [ATTR.op]: S(op),
          [ATTR.writtenAt]: N(ctx.now()),
          [ATTR.ttl]: ttl,
        },
      },
    },
    ...claims.map((c) => claimOnDelete(ctx, c, ttl)),
  ];
  try {
    await ctx.send(
      () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
    );
    return "deleted";
  } catch (error) {
    const reasons = cancellationReasons(error);
    if (reasons === undefined || isConflictOnly(error)) throw error;
    if (reasons[0]?.Code === "ConditionalCheckFailed") {
      // An SDK retry of our transaction that did land (its response was lost) finds the head
      // gone, or already re-created by someone else: our marker says it committed.
      if (await markedBy(ctx, head.pk, op)) return "deleted";
      return { head: parseHead(ctx.layout, reasons[0].Item, head.instanceId), tombstone: true };
    }
    // A claim was taken, released or renewed meanwhile: read them again.
    if (reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      return "retry";
    throw error;
  }
}

/** A held claim becomes a tombstone; a tombstone is checked: both on the token read. */
function claimOnDelete(ctx: Context, c: ClaimRef, ttl: AttributeValue): TransactWriteItem {
  const condition = { ConditionExpression: `#${ATTR.token} = :tok` };
  if (!c.held)
    return {
      ConditionCheck: {
        TableName: ctx.tableName,
        Key: c.key,
        ...expressions(condition, { ":tok": N(c.token) }),
      },
    };
  return {
    Update: {
      TableName: ctx.tableName,
      Key: c.key,
      ...expressions(
        { ...condition, UpdateExpression: TOMBSTONE_UPDATE },
        { ":tok": N(c.token), ":ttl": ttl },
      ),
    },
  };
}

/** Best effort: tombstones the given claims that still hold the token read. */
async function tombstoneAll(ctx: Context, claims: ClaimRef[]): Promise<void> {
  await Promise.all(
    claims
      .filter((c) => c.held)
      .map((c) =>
        ctx
          .send(
            new UpdateItemCommand({
              TableName: ctx.tableName,
              Key: c.key,
              ...expressions(
                { UpdateExpression: TOMBSTONE_UPDATE, ConditionExpression: `#${ATTR.token} = :tok` },
                { ":tok": N(c.token), ":ttl": N(tombstoneTtl(ctx.now())) },
              ),
            }),
          )
          .catch((error: unknown) => {
            if (!isConditionFailed(error)) throw error;
          }),
      ),
  );
}

/** Did the deleteSnapshot call `op` commit (its marker is there)? */
async function markedBy(ctx: Context, pk: string, op: string): Promise<boolean> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.deleteMarkerKey(pk),
      ConsistentRead: true,
    }),
  );
  return str(out.Item, ATTR.op) === op;
}
