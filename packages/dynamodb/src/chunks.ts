import { createHash } from "node:crypto";
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { copyBytes } from "@sayiir/persistence-core";
import { B, batchGet, batchWrite, bin, type Item, N, num, S, str } from "./dynamo.js";
import { ATTR, CHUNK_BYTES, freshId, INLINE_MAX_BYTES, type Layout, VALUE } from "./layout.js";

/**
 * Where a byte value lives: inline in its item, or in `count` chunk items under a fresh id (with
 * the value's SHA-256 when known: values written since it is stored carry it).
 */
export type ValueRef =
  | { inline: Uint8Array }
  | { chunkSetId: string; count: number; length: number; hash?: string };

/** SHA-256 of a value, base64url: how a save tells a large output is unchanged without reading it. */
export const valueHash = (bytes: Uint8Array): string =>
  createHash("sha256").update(bytes).digest("base64url");

/** A chunk set: what deleting a chunked value needs. */
export type ChunkSet = { chunkSetId: string; count: number };

/** A chunk set's items were not all found: the value was replaced (or deleted) under the reader. */
export class MissingChunkError extends Error {}

/**
 * Attribute names of a ValueRef inside an item: d (inline), c/n/l (chunk set id, count, length),
 * and s (the hash) on unprefixed items (results, events).
 */
export function refAttributes(ref: ValueRef, prefix = ""): Item {
  if ("inline" in ref) return { [`${prefix}${VALUE.inline}`]: B(ref.inline) };
  const item: Item = {
    [`${prefix}${VALUE.chunkSet}`]: S(ref.chunkSetId),
    [`${prefix}${VALUE.count}`]: N(ref.count),
    [`${prefix}${VALUE.length}`]: N(ref.length),
  };
  if (prefix === "" && ref.hash !== undefined) item[VALUE.hash] = S(ref.hash);
  return item;
}

export function readRef(item: Item, prefix = ""): ValueRef | undefined {
  const inline = bin(item, `${prefix}${VALUE.inline}`);
  if (inline !== undefined) return { inline };
  const chunkSetId = str(item, `${prefix}${VALUE.chunkSet}`);
  const count = num(item, `${prefix}${VALUE.count}`);
  const length = num(item, `${prefix}${VALUE.length}`);
  if (chunkSetId === undefined || count === undefined || length === undefined) return undefined;
  const hash = prefix === "" ? str(item, VALUE.hash) : undefined;
  return hash === undefined ? { chunkSetId, count, length } : { chunkSetId, count, length, hash };
}

export function chunkSetOf(ref: ValueRef | undefined): ChunkSet | undefined {
  return ref !== undefined && "chunkSetId" in ref ? ref : undefined;
}

/** The value is in chunk items (its read may race a replacement that deletes them). */
export const isChunked = (ref: ValueRef | undefined): boolean => chunkSetOf(ref) !== undefined;

export class Chunks {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
    private readonly layout: Layout,
    private readonly clock: () => number,
  ) {}

  /**
   * Stores a value: small ones stay inline (nothing written yet), large ones are written now as
   * chunk items under a fresh id. The write of the item that points at them is the commit point.
   */
  async write(bytes: Uint8Array, ownerPk: string): Promise<ValueRef> {
    if (bytes.byteLength <= INLINE_MAX_BYTES) return { inline: copyBytes(bytes) };
    const chunkSetId = freshId();
    const count = Math.ceil(bytes.byteLength / CHUNK_BYTES);
    const at = this.clock();
    const requests = Array.from({ length: count }, (_, i) => ({
      PutRequest: {
        Item: {
          ...this.layout.chunkKey(chunkSetId, i),
          [ATTR.owner]: S(ownerPk),
          [ATTR.writtenAt]: N(at),
          [VALUE.inline]: B(
            bytes.subarray(i * CHUNK_BYTES, Math.min(bytes.byteLength, (i + 1) * CHUNK_BYTES)),
          ),
        },
      },
    }));
    // Ten chunks (3.5 MB) per request stays well under BatchWriteItem's 16 MB.
    await batchWrite(this.client, this.tableName, requests, 10, 3);
    return { chunkSetId, count, length: bytes.byteLength, hash: valueHash(bytes) };
  }

  async read(ref: ValueRef): Promise<Uint8Array> {
    if ("inline" in ref) return ref.inline;
    const keys = Array.from({ length: ref.count }, (_, i) => this.layout.chunkKey(ref.chunkSetId, i));
    // 30 chunks (10.5 MB) per request stays under BatchGetItem's 16 MB response.
    const items = await batchGet(this.client, this.tableName, keys, 30, 3);
    const out = new Uint8Array(ref.length);
    let seen = 0;
    for (const item of items) {
      const index = this.layout.chunkIndexOfPk(str(item, ATTR.pk) ?? "");
      const data = bin(item, VALUE.inline);
      if (data === undefined || !Number.isInteger(index) || index < 0 || index >= ref.count) continue;
      const offset = index * CHUNK_BYTES;
      if (offset + data.byteLength > ref.length)
        throw new MissingChunkError(`chunk ${index} overflows the value`);
      out.set(data, offset);
      seen++;
    }
    if (seen !== ref.count)
      throw new MissingChunkError(`found ${seen} of ${ref.count} chunks of ${ref.chunkSetId}`);
    return out;
  }

  async delete(sets: ChunkSet[]): Promise<void> {
    const requests = sets.flatMap((set) =>
      Array.from({ length: set.count }, (_, i) => ({
        DeleteRequest: { Key: this.layout.chunkKey(set.chunkSetId, i) },
      })),
    );
    if (requests.length > 0) await batchWrite(this.client, this.tableName, requests, 25, 4);
  }
}
