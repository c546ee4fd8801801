/*
 * Key layout. Every key of one backend starts with a hash tag `{<prefix>:<shard>}`, so all keys
 * of one shard live in one Redis Cluster slot, and every Lua script touches one slot only.
 *
 *   {P:K}:ready      sorted set: instances of shard K whose ready task holds no live claim,
 *                    score = updatedAt, member = instance id
 *   {P:K}:leased     sorted set: instances whose ready task holds a live claim, score = the
 *                    claim's expiry (+inf without ttl); expired ones go back to ready lazily
 *   {P:K}:ids        sorted set: every instance id of shard K (score 0, walked by ZRANGE BYLEX)
 *   {P:K}:floor      string: highest fencing token of any instance deleted from shard K
 *   {P:K}:m:<id>     hash: snapshot header and the fields the scripts read (see below)
 *   {P:K}:r:<id>     hash: task outputs, field = task id, value = output bytes
 *   {P:K}:c:<id>     hash: claims, field = task id,
 *                    value = "token|claimedAt|expiresAt|requestId|workerId" (requestId: hex)
 *   {P:K}:n:<id>     hash: fencing counters, field = task id, value = last token issued
 *   {P:K}:q:<req>    list: (id, task id) pairs one claim-shard call claimed, so a second run of
 *                    the same call returns them (expires; built in Lua only)
 *
 * The instance id is always the whole tail of a key, after a fixed-length type marker, so no two
 * different ids (whatever characters they hold, "{" and ":" included) ever share a key, and the
 * hash tag (the first "{...}" of the key) is always ours. Task and worker ids are hash fields or
 * the last part of a value, never parsed out of a key.
 *
 * The shard of an instance is FNV-1a (32 bit) of its UTF-8 bytes modulo the shard count; every
 * client of one store must use the same prefix and shard count.
 */

const encoder = new TextEncoder();

/** FNV-1a over the UTF-8 bytes: stable across processes and platforms. */
export function fnv1a(value: string): number {
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(value)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** Fields of the meta hash `{P:K}:m:<id>`. */
export const MetaField = {
  /** encodeSnapshotHeader bytes: everything but task outputs and lastCompletedTaskId. */
  header: "h",
  /** "1" when Completed or Failed, else "0". */
  finished: "f",
  /** definitionHash. */
  definitionHash: "d",
  /** Task id of an AtTask position; absent otherwise. */
  positionTaskId: "p",
  /** lastCompletedTaskId; absent when null. */
  lastCompletedTaskId: "l",
  /** updatedAt in epoch ms (decimal). */
  updatedAt: "u",
  /** initialInput bytes; absent when the snapshot has none. */
  initialInput: "i",
} as const;

export interface InstanceKeys {
  shard: number;
  /** `{P:K}:`, the start of every key of the shard (what the shard scripts build keys from). */
  base: string;
  meta: string;
  results: string;
  claims: string;
  counters: string;
  ready: string;
  leased: string;
  ids: string;
  floor: string;
}

export class KeyLayout {
  constructor(
    readonly prefix: string,
    readonly shards: number,
  ) {}

  shardOf(instanceId: string): number {
    return fnv1a(instanceId) % this.shards;
  }

  /** `{P:K}:` */
  base(shard: number): string {
    return `{${this.prefix}:${shard}}:`;
  }

  ready(shard: number): string {
    return `${this.base(shard)}ready`;
  }

  leased(shard: number): string {
    return `${this.base(shard)}leased`;
  }

  ids(shard: number): string {
    return `${this.base(shard)}ids`;
  }

  floor(shard: number): string {
    return `${this.base(shard)}floor`;
  }

  instance(instanceId: string): InstanceKeys {
    const shard = this.shardOf(instanceId);
    const base = this.base(shard);
    return {
      shard,
      base,
      meta: `${base}m:${instanceId}`,
      results: `${base}r:${instanceId}`,
      claims: `${base}c:${instanceId}`,
      counters: `${base}n:${instanceId}`,
      ready: `${base}ready`,
      leased: `${base}leased`,
      ids: `${base}ids`,
      floor: `${base}floor`,
    };
  }

  /** Every shard index, 0..shards-1. */
  allShards(): number[] {
    return Array.from({ length: this.shards }, (_, i) => i);
  }
}

/*
 * listSnapshotsPage cursor: "r1." + shard + "." + base64url(last id returned in that shard).
 * Opaque to callers; decoded strictly so that a forged cursor gives ValidationError.
 */
export interface ListCursor {
  shard: number;
  after: string;
}

export function encodeCursor(cursor: ListCursor): string {
  return `r1.${cursor.shard}.${Buffer.from(cursor.after, "utf8").toString("base64url")}`;
}

export function decodeCursor(cursor: string, shards: number): ListCursor | undefined {
  const match = /^r1\.(\d{1,6})\.([A-Za-z0-9_-]*)$/.exec(cursor);
  if (match === null) return undefined;
  const shard = Number(match[1]);
  if (shard >= shards) return undefined;
  return { shard, after: Buffer.from(match[2] ?? "", "base64url").toString("utf8") };
}
