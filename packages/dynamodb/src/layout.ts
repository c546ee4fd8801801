import { createHash, randomBytes } from "node:crypto";

/*
 * Single-table layout. Every id is hashed (SHA-256, base64url: 43 characters) into keys, so ids of
 * any length (up to 1,536 UTF-8 bytes) and any character fit DynamoDB's key limits and never
 * collide by concatenation; the exact ids are stored as attributes and checked on read.
 *
 *   item            PK                               SK                      other attributes
 *   head            <P>I#<h(instanceId)>             H                       iid, gen, st, hb | hc/hn/hl, pos, last, upd, def,
 *                                                                            GPK/GSK (only while ready), LPK/LSK
 *   task result     <P>I#<h(instanceId)>             R#<gen>#<h(taskId)>     tid, gen, at, d | c/n/l
 *   claim           <P>I#<h(instanceId)>             L#<h(taskId)>           iid, tid, tok, w, ca, exp, nc (w/ca/exp/nc absent: released; cn: released by completeTasks)
 *   delete marker   <P>I#<h(instanceId)>             D                       op, ttl (written by deleteSnapshot's commit)
 *   chunk           <P>C#<chunkSetId>#<index>        C                       own, at, d
 *
 * <P> is the key prefix, length-prefixed so that two prefixes can never produce the same key.
 * GSI "ready": GPK = <P>Q#<shard>, GSK = zero-padded updatedAt + "#" + instance id (truncated).
 *              While claimed by claim-next: GPK = <P>K#<shard> ("leased"), GSK = zero-padded lease end + "#" + id.
 * GSI "list":  LPK = <P>L#<shard>, LSK = h(instanceId).
 */

export const ATTR = {
  pk: "PK",
  sk: "SK",
  readyPk: "GPK",
  readySk: "GSK",
  listPk: "LPK",
  listSk: "LSK",
} as const;

export const READY_INDEX = "ready";
export const LIST_INDEX = "list";
export const HEAD_SK = "H";
export const CHUNK_SK = "C";
/** Sort key of the marker a deleteSnapshot leaves (with a TTL) to recognise its own retried commit. */
export const DELETE_MARKER_SK = "D";
/** Byte values up to this size are stored inline in their item; larger ones are chunked. */
export const INLINE_MAX_BYTES = 300_000;
/** Size of one chunk item's payload (items are capped at 400 KB). */
export const CHUNK_BYTES = 350_000;
/** Lease end of a claim without ttl (16 digits, after every real time). */
const LEASE_FOREVER = "9999999999999999";
/** Longest instance-id part of the ready index sort key, in UTF-16 units (3 bytes each at most). */
const GSK_ID_UNITS = 300;

/** SHA-256 of the UTF-8 bytes, base64url without padding (43 characters). */
export function hashId(id: string): string {
  return createHash("sha256").update(id, "utf8").digest("base64url");
}

export function freshId(): string {
  return randomBytes(16).toString("base64url");
}

export class Layout {
  readonly base: string;
  constructor(
    keyPrefix: string,
    readonly shards: number,
  ) {
    this.base = `p${keyPrefix.length}:${keyPrefix}#`;
  }

  instancePk(instanceId: string): string {
    return `${this.base}I#${hashId(instanceId)}`;
  }

  resultSk(generation: string, taskId: string): string {
    return `${this.resultPrefix(generation)}${hashId(taskId)}`;
  }

  resultPrefix(generation: string): string {
    return `R#${generation}#`;
  }

  claimSk(taskId: string): string {
    return `L#${hashId(taskId)}`;
  }

  chunkPk(chunkSetId: string, index: number): string {
    return `${this.base}C#${chunkSetId}#${index}`;
  }

  shardOf(instanceId: string): number {
    const digest = createHash("sha256").update(instanceId, "utf8").digest();
    return digest.readUInt32BE(0) % this.shards;
  }

  readyPk(shard: number): string {
    return `${this.base}Q#${shard}`;
  }

  readySk(updatedAt: number, instanceId: string): string {
    let id = instanceId.slice(0, GSK_ID_UNITS);
    if (!id.isWellFormed()) id = id.slice(0, -1);
    return `${String(updatedAt).padStart(16, "0")}#${id}`;
  }

  /** Partition of the ready index holding heads claimed by claim-next, sorted by lease end. */
  leasedPk(shard: number): string {
    return `${this.base}K#${shard}`;
  }

  /** Lease sort key: when others may take the claim over (expiresAt + skew budget; no ttl: never). */
  leaseSk(until: number | undefined, instanceId: string): string {
    const sk = this.readySk(until ?? 0, instanceId);
    return until === undefined ? `${LEASE_FOREVER}${sk.slice(LEASE_FOREVER.length)}` : sk;
  }

  listPk(shard: number): string {
    return `${this.base}L#${shard}`;
  }

  /** Opaque listing cursor: the shard and the hash of the last instance id returned. */
  encodeCursor(shard: number, lastHash: string): string {
    return `${shard}.${lastHash}`;
  }

  decodeCursor(cursor: string): { shard: number; lastHash: string } | undefined {
    const match = /^(\d{1,3})\.([A-Za-z0-9_-]{43})$/.exec(cursor);
    if (!match) return undefined;
    const shard = Number(match[1]);
    if (shard >= this.shards) return undefined;
    return { shard, lastHash: match[2] as string };
  }
}
