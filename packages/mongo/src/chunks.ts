/*
 * The chunk store: blobs (task outputs, large initial inputs, large headers) in the outputs
 * collection, each split into chunk documents well under MongoDB's 16 MB document limit. A blob
 * id is random and never reused, so a new write never overwrites what a reader may be reading.
 */
import { createHash, randomUUID } from "node:crypto";
import type { Collection } from "mongodb";
import { CHUNK_BYTES, type ChunkDoc } from "./layout.js";

/** A blob id: random and never reused. */
export const newBlobId = (): string => randomUUID();

/** The SHA-256 of an output (stored beside its blob id: see ResultRef). */
export const digest = (bytes: Uint8Array): Buffer => createHash("sha256").update(bytes).digest();

/** One blob to write, owned by an instance (its chunks carry the instance id, for sweeping). */
export interface OwnedBlob {
  instanceId: string;
  id: string;
  bytes: Uint8Array;
}

/** Bytes of a BSON Binary (or a Buffer) as a view; a copy is the caller's decision. */
export function binaryBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  const bin = value as { buffer?: Uint8Array; position?: number } | null;
  if (bin?.buffer instanceof Uint8Array) return bin.buffer.subarray(0, bin.position ?? bin.buffer.byteLength);
  throw new TypeError("not a binary value");
}

/** Chunk documents of one blob; an empty blob is one empty chunk. */
export function chunkDocs(instanceId: string, blobId: string, bytes: Uint8Array): ChunkDoc[] {
  const count = Math.max(1, Math.ceil(bytes.byteLength / CHUNK_BYTES));
  const docs: ChunkDoc[] = [];
  for (let n = 0; n < count; n++) {
    const part = bytes.subarray(n * CHUNK_BYTES, Math.min(bytes.byteLength, (n + 1) * CHUNK_BYTES));
    docs.push({
      s: instanceId,
      g: blobId,
      n,
      c: count,
      d: Buffer.from(part.buffer, part.byteOffset, part.byteLength),
    });
  }
  return docs;
}

/** Joins the chunks of one blob; undefined when one is missing. */
function joinChunks(list: Array<{ n: number; c: number; d: Uint8Array }>): Uint8Array | undefined {
  list.sort((a, b) => a.n - b.n);
  const count = list[0]?.c ?? 0;
  if (list.length !== count || list.some((p, n) => p.n !== n)) return undefined;
  let total = 0;
  for (const p of list) total += p.d.byteLength;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of list) {
    out.set(p.d, offset);
    offset += p.d.byteLength;
  }
  return out;
}

/** Ids per `$in` query and chunk documents per insertMany call. */
const BATCH = 5_000;

export class ChunkStore {
  readonly #outputs: Collection<ChunkDoc>;

  constructor(outputs: Collection<ChunkDoc>) {
    this.#outputs = outputs;
  }

  /**
   * Writes blobs (all chunks, of one or several instances, as few insertMany calls as the sizes
   * allow) and returns once they are durable per the client's write concern.
   */
  async write(blobs: readonly OwnedBlob[]): Promise<void> {
    // Batches of bounded size: the driver splits too, but this keeps each call's memory modest.
    let batch: ChunkDoc[] = [];
    let size = 0;
    for (const blob of blobs) {
      for (const doc of chunkDocs(blob.instanceId, blob.id, blob.bytes)) {
        batch.push(doc);
        size += (doc.d as Buffer).byteLength + 64;
        if (size >= 3 * CHUNK_BYTES || batch.length >= BATCH) {
          await this.#outputs.insertMany(batch, { ordered: false });
          batch = [];
          size = 0;
        }
      }
    }
    if (batch.length > 0) await this.#outputs.insertMany(batch, { ordered: false });
  }

  /** Reads blobs by id; a blob with a missing chunk (or none) is absent from the map. */
  async read(ids: readonly string[]): Promise<Map<string, Uint8Array>> {
    const found = new Map<string, Uint8Array>();
    if (ids.length === 0) return found;
    const parts = new Map<string, Array<{ n: number; c: number; d: Uint8Array }>>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += BATCH) {
      const cursor = this.#outputs.find(
        { g: { $in: unique.slice(i, i + BATCH) } },
        { projection: { _id: 0, g: 1, n: 1, c: 1, d: 1 } },
      );
      for await (const doc of cursor) {
        let list = parts.get(doc.g);
        if (list === undefined) {
          list = [];
          parts.set(doc.g, list);
        }
        list.push({ n: doc.n, c: doc.c, d: binaryBytes(doc.d) });
      }
    }
    for (const [id, list] of parts) {
      const bytes = joinChunks(list);
      if (bytes !== undefined) found.set(id, bytes);
    }
    return found;
  }

  /** Deletes blobs that no committed document references any more. */
  async delete(ids: readonly string[]): Promise<void> {
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += BATCH) {
      await this.#outputs.deleteMany({ g: { $in: unique.slice(i, i + BATCH) } });
    }
  }
}
