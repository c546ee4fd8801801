/*
 * How data is laid out. Ids are only ever used as values (never as field names, never as
 * operators): an instance id is a snapshot's `_id` string, a claim's `_id` is the subdocument
 * { i: instanceId, t: taskId } (field order fixed), and task ids inside a snapshot live in an
 * array of { t, g } entries.
 */

/** Collection names under one prefix. */
export interface CollectionNames {
  snapshots: string;
  outputs: string;
  claims: string;
  meta: string;
}

export function collectionNames(prefix: string): CollectionNames {
  return {
    snapshots: `${prefix}snapshots`,
    outputs: `${prefix}outputs`,
    claims: `${prefix}claims`,
    meta: `${prefix}meta`,
  };
}

/** One entry of a snapshot's results: task id and the blob id (`g`) of its output. */
export interface ResultRef {
  t: string;
  g: string;
}

/** The snapshot document: the commit point of every snapshot and task-result write. */
export interface SnapshotDoc {
  _id: string;
  /** Version: a fresh random string on every write (optimistic concurrency). */
  v: string;
  /** encodeSnapshotHeader bytes, inline when small ... */
  h?: Uint8Array | { buffer: Uint8Array; position: number };
  /** ... else the blob id of the header in the outputs collection. */
  hg?: string;
  /** Finished (Completed or Failed). */
  f: boolean;
  /** Definition hash. */
  d: string;
  /** Task id of an AtTask position, else null. */
  p: string | null;
  /** Task results. */
  r: ResultRef[];
  /** lastCompletedTaskId. */
  l: string | null;
  /** updatedAt, epoch ms. */
  u: number;
  /** Ready index: updatedAt and instance id, present only while the position's task is ready. */
  qa?: number;
  qi?: string;
}

/** A chunk of a blob (task output or large header) in the outputs collection. */
export interface ChunkDoc {
  /** Instance id. */
  s: string;
  /** Blob id (random, never reused). */
  g: string;
  /** Chunk index and chunk count. */
  n: number;
  c: number;
  d: unknown;
}

/** The key of a claim: a subdocument, so no pair of ids can share a key. */
export interface ClaimKey {
  i: string;
  t: string;
}

export const claimKey = (instanceId: string, taskId: string): ClaimKey => ({ i: instanceId, t: taskId });

/** A claim document. `w` is null once released (the document keeps the last token). */
export interface ClaimDoc {
  _id: ClaimKey;
  i: string;
  w: string | null;
  c: Date;
  e: Date | null;
  k: number;
}

/** Index names created by migrate(). */
export const INDEX = {
  ready: "sayiir_ready",
  blob: "sayiir_blob",
  blobInstance: "sayiir_blob_instance",
  claimInstance: "sayiir_claim_instance",
} as const;

/** Largest header stored inline in the snapshot document; larger ones are chunked. */
export const INLINE_HEADER_BYTES = 4 * 1024 * 1024;
/** Chunk size of blobs: well under MongoDB's 16 MB document limit. */
export const CHUNK_BYTES = 8 * 1024 * 1024;

/** listSnapshotsPage cursor: the last instance id of the page, base64url (opaque to callers). */
export function encodeCursor(instanceId: string): string {
  return Buffer.from(instanceId, "utf8").toString("base64url");
}

export function decodeCursor(cursor: string): string {
  return Buffer.from(cursor, "base64url").toString("utf8");
}
