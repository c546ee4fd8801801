/*
 * saveSnapshot's reuse of unchanged large outputs. A save writes a new generation of result items
 * (that is what makes it atomic: the head's put commits them all), but an output stored in chunks
 * whose bytes did not change need not be written again: its new result item points at the chunk
 * set the current generation's item points at, told unchanged by its length and SHA-256 (`s`),
 * without reading it. The chunk set then belongs to the new generation: the save that replaces the
 * old one keeps it when it drops that generation. Safe against the writers that delete a chunk
 * set: the commit is conditioned on the generation the reuse was decided on (the head's put) and
 * on each reused result item still pointing at its set (a condition check each, in the commit's
 * transaction: a result replaced since by saveTaskResult, completeTasks or a step deletes it).
 * When either fails, the save writes those outputs after all and commits again.
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import type { StoredSnapshot } from "@sayiir/persistence-core/adapter";
import { readRef, type ValueRef, valueHash } from "./chunks.js";
import { resultItem } from "./completion-plan.js";
import type { Context } from "./context.js";
import { batchWrite, expressions, type Item, type Key, queryAll, S, str } from "./dynamo.js";
import { type Head, keepsResults } from "./items.js";
import { ATTR, INLINE_MAX_BYTES, keyOf, names, VALUE } from "./layout.js";

/** At most this many outputs are reused by one save (each adds a check to its transaction). */
export const MAX_REUSED = 90;

type Chunked = Extract<ValueRef, { chunkSetId: string }>;

/** A chunked result of the current generation: its value and its item's key. */
export interface Candidate {
  ref: Chunked & { hash: string };
  source: Key;
}

/** An output the save points at again instead of writing it. */
export interface Reused extends Candidate {
  taskId: string;
  output: Uint8Array;
}

/**
 * The chunked results (with a hash) of the head's generation, by task: one Query projected to
 * their pointers, made only when the snapshot has an output large enough to be chunked.
 */
export async function candidates(
  ctx: Context,
  stored: StoredSnapshot,
  head: Head | undefined,
): Promise<Map<string, Candidate>> {
  const found = new Map<string, Candidate>();
  if (head === undefined || !keepsResults(head)) return found;
  if (!stored.results.some((r) => r.output.byteLength > INLINE_MAX_BYTES)) return found;
  const items = await queryAll(ctx.send, {
    TableName: ctx.tableName,
    ConsistentRead: true,
    ...expressions(
      {
        KeyConditionExpression: `#${ATTR.pk} = :pk AND begins_with(#${ATTR.sk}, :prefix)`,
        ProjectionExpression: names(
          ATTR.pk,
          ATTR.sk,
          ATTR.taskId,
          VALUE.chunkSet,
          VALUE.count,
          VALUE.length,
          VALUE.hash,
        ),
      },
      { ":pk": S(head.pk), ":prefix": S(ctx.layout.resultPrefix(head.generation)) },
    ),
  });
  for (const item of items) {
    const taskId = str(item, ATTR.taskId);
    const ref = readRef(item);
    if (taskId === undefined || ref === undefined || !("chunkSetId" in ref) || ref.hash === undefined)
      continue;
    found.set(taskId, { ref: { ...ref, hash: ref.hash }, source: keyOf(item) });
  }
  return found;
}

/** The candidate holds exactly these bytes (same length and SHA-256). */
export function unchanged(candidate: Candidate | undefined, output: Uint8Array): candidate is Candidate {
  return (
    candidate !== undefined &&
    candidate.ref.length === output.byteLength &&
    candidate.ref.hash === valueHash(output)
  );
}

/** The commit's check that a reused result item still points at the chunk set reused. */
export function reuseCheck(ctx: Context, reused: Reused): TransactWriteItem {
  return {
    ConditionCheck: {
      TableName: ctx.tableName,
      Key: reused.source,
      ...expressions({ ConditionExpression: `#${VALUE.chunkSet} = :c` }, { ":c": S(reused.ref.chunkSetId) }),
    },
  };
}

/**
 * The reuse no longer holds (the generation it was decided on was replaced, or a reused result
 * was): the reused outputs are written after all, their new items put again with the new chunks.
 */
export async function unshare(
  ctx: Context,
  pk: string,
  save: { generation: string; reused: Reused[]; written: ValueRef[]; unshare: boolean },
): Promise<void> {
  const now = ctx.now();
  const items: Item[] = [];
  for (const reused of save.reused) {
    const ref = await ctx.chunks.write(reused.output, pk);
    save.written.push(ref);
    items.push(resultItem(ctx.layout, pk, save.generation, reused.taskId, now, ref));
  }
  await batchWrite(
    ctx.client,
    ctx.tableName,
    items.map((Item) => ({ PutRequest: { Item } })),
  );
  save.reused = [];
  save.unshare = false;
}
