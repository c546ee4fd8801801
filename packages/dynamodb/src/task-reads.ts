/*
 * loadTaskResult and loadTaskClaims: reads of one task's output and of an instance's claim items,
 * without the snapshot (its header, initial input and other outputs are never read).
 */
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { BackendError, compareIds, failures, type TaskClaim } from "@sayiir/persistence-core";
import { RETRY, REVOKED_EXPIRY, retryOnRace } from "@sayiir/persistence-core/adapter";
import { MissingChunkError, readRef } from "./chunks.js";
import { type Context, quote, RACE_ATTEMPTS } from "./context.js";
import { expressions, type Item, num, queryAll, S, str } from "./dynamo.js";
import { getHead, type Head, parseHead, statusOf } from "./items.js";
import { ATTR, names } from "./layout.js";

/**
 * loadTaskResult: the head (strongly consistent; for the state and the generation), then the one
 * result item of that generation (and its chunks when it is chunked). Completed and Failed keep no
 * results: null without another read. An item missing, or a chunk gone, may mean a concurrent
 * save replaced the generation (and dropped the old one): then the head is read again, and the
 * read retried when its generation changed.
 */
export async function loadTaskResult(
  ctx: Context,
  instanceId: string,
  taskId: string,
): Promise<Uint8Array | null> {
  return retryOnRace(
    `loadTaskResult of ${quote(instanceId)}`,
    async (attempt) => {
      const head = await headState(ctx, instanceId);
      if (head === undefined) throw failures.snapshotNotFound(instanceId);
      if (!(await keepsResults(ctx, head))) return null;
      const item = await resultItem(ctx, head, taskId);
      let missing: MissingChunkError | undefined;
      if (item !== undefined) {
        try {
          const ref = readRef(item);
          return ref === undefined ? new Uint8Array(0) : await ctx.chunks.read(ref);
        } catch (error) {
          if (!(error instanceof MissingChunkError)) throw error;
          missing = error;
        }
      }
      // No item (or a chunk gone): the answer, unless a save replaced the generation meanwhile.
      const current = await headState(ctx, instanceId);
      if (current?.generation !== head.generation && attempt + 1 < RACE_ATTEMPTS) return RETRY;
      if (missing !== undefined) throw missing;
      return null;
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * The head's key, instance id, generation and status only (strongly consistent): the header and
 * the initial input stored inline on the head are not transferred.
 */
async function headState(ctx: Context, instanceId: string): Promise<Head | undefined> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.headKey(ctx.layout.instancePk(instanceId)),
      ConsistentRead: true,
      ...expressions({
        ProjectionExpression: names(ATTR.pk, ATTR.instanceId, ATTR.generation, ATTR.status, ATTR.kind),
      }),
    }),
  );
  return parseHead(ctx.layout, out.Item, instanceId);
}

/**
 * InProgress, Paused and Cancelled keep their results. A finished head written before the status
 * was stored says which only in its header: read whole then (such heads only).
 */
async function keepsResults(ctx: Context, head: Head): Promise<boolean> {
  if (!head.finished) return true;
  if (head.kind !== undefined) return head.kind === "Cancelled";
  const full = await getHead(ctx, head.instanceId);
  return full !== undefined && (await statusOf(ctx, full)) === "Cancelled";
}

/** The result item of `taskId` under the head's generation (strongly consistent), if any. */
async function resultItem(ctx: Context, head: Head, taskId: string): Promise<Item | undefined> {
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.resultKey(head.pk, head.generation, taskId),
      ConsistentRead: true,
    }),
  );
  if (out.Item === undefined) return undefined;
  if (str(out.Item, ATTR.taskId) !== taskId)
    throw new BackendError(
      `the result item of ${quote(taskId)} belongs to another task id (hash collision?)`,
    );
  return out.Item;
}

/**
 * loadTaskClaims: every claim item of the instance (one query of its partition, strongly
 * consistent: claims from claimTask and from claim-next live in the same items) that has a
 * holder and was not revoked by a cancel (expiry REVOKED_EXPIRY), live or expired, by task id.
 * Tombstones (released, completed, deleted) have no holder.
 */
export async function loadTaskClaims(ctx: Context, instanceId: string): Promise<TaskClaim[]> {
  const items = await queryAll(ctx.send, {
    TableName: ctx.tableName,
    ConsistentRead: true,
    ...expressions(
      {
        KeyConditionExpression: `#${ATTR.pk} = :pk AND begins_with(#${ATTR.sk}, :prefix)`,
        ProjectionExpression: names(
          ATTR.instanceId,
          ATTR.taskId,
          ATTR.token,
          ATTR.worker,
          ATTR.claimedAt,
          ATTR.expiresAt,
        ),
      },
      { ":pk": S(ctx.layout.instancePk(instanceId)), ":prefix": S(ctx.layout.claimPrefix()) },
    ),
  });
  const claims: TaskClaim[] = [];
  for (const item of items) {
    const claim = claimOf(item, instanceId);
    if (claim !== undefined) claims.push(claim);
  }
  return claims.sort((a, b) => compareIds(a.taskId, b.taskId));
}

/** A held, unrevoked claim item as a TaskClaim (undefined: a tombstone or a revoked claim). */
function claimOf(item: Item, instanceId: string): TaskClaim | undefined {
  const workerId = str(item, ATTR.worker);
  const taskId = str(item, ATTR.taskId);
  const token = num(item, ATTR.token);
  const claimedAt = num(item, ATTR.claimedAt);
  const expiresAt = num(item, ATTR.expiresAt);
  if (workerId === undefined || taskId === undefined || token === undefined || claimedAt === undefined)
    return undefined;
  if (expiresAt !== undefined && expiresAt <= REVOKED_EXPIRY) return undefined;
  if (str(item, ATTR.instanceId) !== instanceId)
    throw new BackendError(
      `the claims of ${quote(instanceId)} belong to another instance id (hash collision?)`,
    );
  return { instanceId, taskId, workerId, claimedAt, expiresAt: expiresAt ?? null, token };
}
