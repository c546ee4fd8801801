import { randomUUID } from "node:crypto";
import type { Collection } from "mongodb";
import { CHUNK_BYTES, type ChunkDoc } from "./layout.js";

/** A blob id: random and never reused, so a new write never overwrites what a reader may be reading. */
export const newBlobId = (): string => randomUUID();

/** Bytes of a BSON Binary (or a Buffer) as a view. */
export function binaryBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  const bin = value as { buffer?: Uint8Array; position?: number } | null;
  if (bin?.buffer instanceof Uint8Array) return bin.buffer.subarray(0, bin.position ?? bin.buffer.byteLength);
  throw new TypeError("not a binary value");
}

/** A plain Uint8Array copy (never a driver Buffer). */
export function plainCopy(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  out.set(bytes);
  return out;
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

/** Writes blobs (all chunks) and returns once they are durable per the client's write concern. */
export async function writeBlobs(
  outputs: Collection<ChunkDoc>,
  instanceId: string,
  blobs: Array<{ id: string; bytes: Uint8Array }>,
): Promise<void> {
  await writeOwnedBlobs(
    outputs,
    blobs.map((b) => ({ instanceId, ...b })),
  );
}

/** writeBlobs for blobs of several instances at once (as few insertMany calls as the sizes allow). */
export async function writeOwnedBlobs(
  outputs: Collection<ChunkDoc>,
  blobs: ReadonlyArray<{ instanceId: string; id: string; bytes: Uint8Array }>,
): Promise<void> {
  // Batches of bounded size: the driver splits too, but this keeps each call's memory modest.
  let batch: ChunkDoc[] = [];
  let size = 0;
  for (const blob of blobs) {
    for (const doc of chunkDocs(blob.instanceId, blob.id, blob.bytes)) {
      batch.push(doc);
      size += (doc.d as Buffer).byteLength + 64;
      if (size >= 3 * CHUNK_BYTES || batch.length >= 5_000) {
        await outputs.insertMany(batch, { ordered: false });
        batch = [];
        size = 0;
      }
    }
  }
  if (batch.length > 0) await outputs.insertMany(batch, { ordered: false });
}

/** Reads blobs by id; a blob with a missing chunk (or none) is absent from the map. */
export async function readBlobs(
  outputs: Collection<ChunkDoc>,
  ids: readonly string[],
): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  if (ids.length === 0) return found;
  const parts = new Map<string, Array<{ n: number; c: number; d: Uint8Array }>>();
  const unique = [...new Set(ids)];
  for (let i = 0; i < unique.length; i += 5_000) {
    const cursor = outputs.find(
      { g: { $in: unique.slice(i, i + 5_000) } },
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
    list.sort((a, b) => a.n - b.n);
    const count = list[0]?.c ?? 0;
    if (list.length !== count || list.some((p, n) => p.n !== n)) continue;
    let total = 0;
    for (const p of list) total += p.d.byteLength;
    const out = new Uint8Array(total);
    let offset = 0;
    for (const p of list) {
      out.set(p.d, offset);
      offset += p.d.byteLength;
    }
    found.set(id, out);
  }
  return found;
}

/** Deletes blobs that no committed document references any more. */
export async function deleteBlobs(outputs: Collection<ChunkDoc>, ids: readonly string[]): Promise<void> {
  const unique = [...new Set(ids)];
  for (let i = 0; i < unique.length; i += 5_000) {
    await outputs.deleteMany({ g: { $in: unique.slice(i, i + 5_000) } });
  }
}
