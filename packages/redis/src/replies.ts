import { randomBytes } from "node:crypto";
import { type ClaimedTask, compareIds, type TaskClaim } from "@sayiir/persistence-core";

/*
 * Conversions between script arguments / replies and the contract's types.
 */

/**
 * A driver Buffer as a plain Uint8Array: a view when the Buffer has its memory mostly to itself,
 * a copy when it is a small slice of a larger read buffer (so it does not keep that alive).
 */
export function bytes(buf: Buffer): Uint8Array {
  if (buf.buffer.byteLength > 2 * buf.byteLength + 1024) return new Uint8Array(buf);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

export const str = (value: Buffer | string | number): string =>
  typeof value === "string" ? value : String(value);

/** Bytes as a script argument, without a copy. */
export function toArg(value: string | Uint8Array): string | Buffer {
  if (typeof value === "string") return value;
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

const processTag = randomBytes(8).toString("hex");
let calls = 0;

/**
 * A fresh id for one call, stored with what the call did: a script that runs a second time for
 * the same call (its first reply lost, the command sent again) answers what its first run did.
 * Hex (the claim format wants it); unique per process by a counter, across processes by a random
 * tag drawn once.
 */
export function requestId(): string {
  calls = (calls + 1) % Number.MAX_SAFE_INTEGER;
  return processTag + calls.toString(16);
}

export function toClaim(
  instanceId: string,
  taskId: string,
  workerId: string,
  token: Buffer | string,
  at: Buffer | string,
  exp: Buffer | string,
): TaskClaim {
  const expires = str(exp);
  return {
    instanceId,
    taskId,
    workerId,
    claimedAt: Number(str(at)),
    expiresAt: expires === "" ? null : Number(expires),
    token: Number(str(token)),
  };
}

export interface Scored {
  score: number;
  instanceId: string;
}

/**
 * Oldest updatedAt first, ties by instance id in code point (UTF-8 byte) order: the order ZRANGE
 * gives within a shard, and the order the scripts merge shards in, so a merge on the client agrees.
 */
export function byAge(a: Scored, b: Scored): number {
  if (a.score !== b.score) return a.score - b.score;
  return compareIds(a.instanceId, b.instanceId);
}

export function groupByShard<T extends { shard: number }>(items: readonly T[]): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const group = groups.get(item.shard);
    if (group === undefined) groups.set(item.shard, [item]);
    else group.push(item);
  }
  return groups;
}

/**
 * Claim-next reply: {json, input, input, ...}, json = flat strings, 7 per task (id, taskId,
 * score, definitionHash, token, claimedAt, expiresAt), the inputs in the same order.
 */
export function decodeClaimed(reply: Buffer[], workerId: string): Array<ClaimedTask & Scored> {
  const head = reply[0];
  if (head === undefined) return [];
  const fields = JSON.parse(head.toString("utf8")) as string[] | Record<string, never>;
  if (!Array.isArray(fields)) return [];
  const out: Array<ClaimedTask & Scored> = [];
  for (let i = 0, k = 1; i + 6 < fields.length; i += 7, k++) {
    const instanceId = fields[i] as string;
    const taskId = fields[i + 1] as string;
    const expires = fields[i + 6] as string;
    out.push({
      instanceId,
      taskId,
      score: Number(fields[i + 2]),
      workflowDefinitionHash: fields[i + 3] as string,
      input: bytes(reply[k] as Buffer),
      claim: {
        instanceId,
        taskId,
        workerId,
        claimedAt: Number(fields[i + 5]),
        expiresAt: expires === "" ? null : Number(expires),
        token: Number(fields[i + 4]),
      },
    });
  }
  return out;
}
