/*
 * cleanup(): deletes what interrupted writes left behind. Orphans never change what a reader
 * sees (readers only follow the current head), so this is housekeeping, run off-peak.
 */
import { type AttributeValue, ScanCommand, type ScanCommandOutput } from "@aws-sdk/client-dynamodb";
import type { Context } from "./context.js";
import { batchWrite, expressions, type Item, type Key, num, S, str } from "./dynamo.js";
import { ATTR, DELETE_MARKER_SK, HEAD_SK, HEAD_VALUE, keyOf, names, STATUS, VALUE } from "./layout.js";

/** Default age below which cleanup() leaves an item alone (it may belong to a write in flight). */
export const DEFAULT_GRACE_MS = 15 * 60_000;

/** What the scan found under the backend's key prefix. */
interface Inventory {
  /** Current generation of every head, by partition key. */
  heads: Map<string, string>;
  /** The incarnation of every head whose events are still pending (not finished), by partition key. */
  incarnations: Map<string, string>;
  /** Chunk sets some head or current (or young) result or event points at. */
  referenced: Set<string>;
  results: Array<{ key: Key; pk: string; gen: string; at: number; chunkSetId?: string }>;
  events: Array<{ key: Key; pk: string; inc: string; at: number; chunkSetId?: string }>;
  chunks: Array<{ key: Key; chunkSetId: string; at: number }>;
  markers: Array<{ key: Key; at: number }>;
}

/**
 * Deletes result items of a generation that is not (or no longer) current, event items that no
 * unfinished head's incarnation owns (its instance finished, was deleted, or the send never
 * committed), chunk items that no head, current result or pending event points at, and the
 * markers of interrupted deletes. Only items older than `graceMs` are touched, so writes in
 * flight are safe. It scans the table (filtered to this backend's key prefix).
 */
export async function cleanup(ctx: Context, graceMs: number): Promise<{ deletedItems: number }> {
  const cutoff = ctx.now() - graceMs;
  const inventory = await scan(ctx);
  const garbage = garbageOf(inventory, cutoff);
  await batchWrite(
    ctx.client,
    ctx.tableName,
    garbage.map((Key) => ({ DeleteRequest: { Key } })),
  );
  return { deletedItems: garbage.length };
}

/** Scans every item of the key prefix (strongly consistent), sorted into an inventory. */
async function scan(ctx: Context): Promise<Inventory> {
  const inventory: Inventory = {
    heads: new Map(),
    incarnations: new Map(),
    referenced: new Set(),
    results: [],
    events: [],
    chunks: [],
    markers: [],
  };
  let startKey: Record<string, AttributeValue> | undefined;
  do {
    const out: ScanCommandOutput = await ctx.send(
      new ScanCommand({
        TableName: ctx.tableName,
        ExclusiveStartKey: startKey,
        ConsistentRead: true,
        ...expressions(
          {
            FilterExpression: `begins_with(#${ATTR.pk}, :base)`,
            ProjectionExpression: names(
              ATTR.pk,
              ATTR.sk,
              ATTR.generation,
              ATTR.status,
              ATTR.incarnation,
              ATTR.writtenAt,
              VALUE.chunkSet,
              `${HEAD_VALUE.header}${VALUE.chunkSet}`,
              `${HEAD_VALUE.input}${VALUE.chunkSet}`,
            ),
          },
          { ":base": S(ctx.layout.base) },
        ),
      }),
    );
    startKey = out.LastEvaluatedKey;
    for (const item of out.Items ?? []) classify(ctx, item, inventory);
  } while (startKey !== undefined);
  return inventory;
}

function classify(ctx: Context, item: Item, inventory: Inventory): void {
  const pk = str(item, ATTR.pk) as string;
  const sk = str(item, ATTR.sk) as string;
  const key = keyOf(item);
  const at = num(item, ATTR.writtenAt) ?? 0;
  if (sk === HEAD_SK) {
    inventory.heads.set(pk, str(item, ATTR.generation) ?? "");
    const inc = str(item, ATTR.incarnation);
    if (inc !== undefined && str(item, ATTR.status) !== STATUS.finished) inventory.incarnations.set(pk, inc);
    for (const prefix of [HEAD_VALUE.header, HEAD_VALUE.input]) {
      const set = str(item, `${prefix}${VALUE.chunkSet}`);
      if (set) inventory.referenced.add(set);
    }
  } else if (ctx.layout.isResultSk(sk)) {
    const entry: Inventory["results"][number] = { key, pk, gen: str(item, ATTR.generation) ?? "", at };
    const c = str(item, VALUE.chunkSet);
    if (c !== undefined) entry.chunkSetId = c;
    inventory.results.push(entry);
  } else if (ctx.layout.isEventSk(sk)) {
    const entry: Inventory["events"][number] = { key, pk, inc: str(item, ATTR.incarnation) ?? "", at };
    const c = str(item, VALUE.chunkSet);
    if (c !== undefined) entry.chunkSetId = c;
    inventory.events.push(entry);
  } else if (sk === DELETE_MARKER_SK) {
    inventory.markers.push({ key, at });
  } else {
    const chunkSetId = ctx.layout.chunkSetOfPk(pk);
    if (chunkSetId !== undefined) inventory.chunks.push({ key, chunkSetId, at });
  }
}

/** The keys to delete: old enough, and neither current nor pointed at. */
function garbageOf(inventory: Inventory, cutoff: number): Key[] {
  const garbage: Key[] = [];
  for (const r of inventory.results) {
    if (inventory.heads.get(r.pk) === r.gen || r.at > cutoff) {
      if (r.chunkSetId) inventory.referenced.add(r.chunkSetId);
    } else garbage.push(r.key);
  }
  for (const e of inventory.events) {
    if (inventory.incarnations.get(e.pk) === e.inc || e.at > cutoff) {
      if (e.chunkSetId) inventory.referenced.add(e.chunkSetId);
    } else garbage.push(e.key);
  }
  for (const c of inventory.chunks) {
    if (!inventory.referenced.has(c.chunkSetId) && c.at <= cutoff) garbage.push(c.key);
  }
  for (const m of inventory.markers) if (m.at <= cutoff) garbage.push(m.key);
  return garbage;
}
