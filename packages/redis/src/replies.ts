import { randomBytes } from "node:crypto";
import {
  type AvailableTask,
  type ClaimedTask,
  compareIds,
  copyBytes,
  type PendingEvent,
  type TaskAttempts,
  type TaskClaim,
  type TaskResult,
  toBytes,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { fromStoredParts } from "@sayiir/persistence-core/adapter";
import { FieldPrefix, MetaField, SEQUENCE_DIGITS } from "./layout.js";

/*
 * Conversions between script arguments / replies and the contract's types.
 */

/**
 * A driver Buffer as a plain Uint8Array: a view when the Buffer has its memory mostly to itself,
 * a copy when it is a small slice of a larger read buffer (so it does not keep that alive).
 */
export function bytes(buf: Buffer): Uint8Array {
  return buf.buffer.byteLength > 2 * buf.byteLength + 1024 ? copyBytes(buf) : toBytes(buf);
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

/**
 * loadSnapshot's reply (the instance hash, flat field/value pairs) as a snapshot: the header,
 * the initial input of its own field (an older header that still carries it loads too), the
 * outputs; claims are skipped.
 */
export function decodeInstance(pairs: Buffer[], instanceId: string): WorkflowSnapshot {
  const meta = new Map<string, Buffer>();
  const results: TaskResult[] = [];
  const attempts: Array<{ taskId: string } & TaskAttempts> = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const field = str(pairs[i] as Buffer);
    const value = pairs[i + 1] as Buffer;
    if (field.startsWith(FieldPrefix.result)) {
      results.push({ taskId: field.slice(FieldPrefix.result.length), output: bytes(value) });
    } else if (field.startsWith(FieldPrefix.attempts)) {
      attempts.push({
        taskId: field.slice(FieldPrefix.attempts.length),
        ...decodeAttempts(value.toString("utf8")),
      });
    } else if (!field.startsWith(FieldPrefix.claim)) {
      meta.set(field, value);
    }
  }
  const header = meta.get(MetaField.header);
  const initialInput = meta.get(MetaField.initialInput);
  const last = meta.get(MetaField.lastCompletedTaskId);
  const updatedAt = Number(str(meta.get(MetaField.updatedAt) ?? ""));
  return fromStoredParts({
    instanceId,
    header: header === undefined ? new Uint8Array(0) : bytes(header),
    initialInput: initialInput === undefined ? null : bytes(initialInput),
    results,
    lastCompletedTaskId: last === undefined ? null : str(last),
    ...(attempts.length === 0 ? {} : { attempts }),
    ...(Number.isSafeInteger(updatedAt) && updatedAt >= 0 ? { updatedAt } : {}),
  });
}

/*
 * AttemptsFormat: a task's attempts field "count|lastFailedAt|retryAt|error": lastFailedAt ''
 * = null; retryAt '' = absent, 'n' = null; error '' = null, else '=' followed by the text (last,
 * so it may hold "|"). The scripts read the count (the attempt number) and bump it (a takeover).
 */
export function encodeAttempts(a: TaskAttempts): string {
  const retry = a.retryAt === undefined ? "" : a.retryAt === null ? "n" : String(a.retryAt);
  const failed = a.lastFailedAt === null ? "" : String(a.lastFailedAt);
  return `${a.count}|${failed}|${retry}|${a.lastError === null ? "" : `=${a.lastError}`}`;
}

export function decodeAttempts(value: string): TaskAttempts {
  const [count = "0", failed = "", retry = ""] = value.split("|", 3);
  const rest = value.slice(count.length + failed.length + retry.length + 3);
  return {
    count: Number(count),
    lastError: rest.startsWith("=") ? rest.slice(1) : null,
    lastFailedAt: failed === "" ? null : Number(failed),
    ...(retry === "" ? {} : { retryAt: retry === "n" ? null : Number(retry) }),
  };
}

export interface Scored {
  score: number;
  instanceId: string;
}

/** A ready-set entry of one shard: a discovery or claim-next candidate. */
export interface Candidate extends Scored {
  shard: number;
  /** The ready task ("" when the peek did not check it). */
  taskId: string;
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

/** A peek reply of one shard: mode '0' {id, score, ...} or mode '1' {id, taskId, score, ...}. */
export function decodeCandidates(flat: string[], shard: number, checked: boolean): Candidate[] {
  const width = checked ? 3 : 2;
  const out: Candidate[] = [];
  for (let i = 0; i + width - 1 < flat.length; i += width) {
    out.push({
      shard,
      instanceId: flat[i] as string,
      taskId: checked ? (flat[i + 1] as string) : "",
      score: Number(flat[i + width - 1]),
    });
  }
  return out;
}

/**
 * What a task after a wait carries, from a script's wake: '' (not a wait), 't' (timed out) or
 * "<sequence, 16 digits><event name>" (the event it carries).
 */
export function wakeOf(wake: string): Pick<AvailableTask, "event" | "timedOut"> {
  if (wake === "") return {};
  if (wake === "t") return { timedOut: true };
  return {
    event: { eventName: wake.slice(SEQUENCE_DIGITS), sequence: Number(wake.slice(0, SEQUENCE_DIGITS)) },
  };
}

/** Attempt, priority and queue of a reply (three strings: the scripts' schedule_out). */
function scheduleOf(attempt: Buffer | string, priority: Buffer | string, queue: Buffer | string) {
  return { attempt: Number(str(attempt)), priority: Number(str(priority)), queue: str(queue) };
}

/** A peek reply in mode '2': {id, taskId, score, definitionHash, input, wake, attempt, priority, queue, ...}. */
export function decodeAvailable(flat: Buffer[]): AvailableTask[] {
  const found: AvailableTask[] = [];
  for (let i = 0; i + 8 < flat.length; i += 9) {
    found.push({
      instanceId: str(flat[i] as Buffer),
      taskId: str(flat[i + 1] as Buffer),
      workflowDefinitionHash: str(flat[i + 3] as Buffer),
      input: bytes(flat[i + 4] as Buffer),
      ...scheduleOf(flat[i + 6] as Buffer, flat[i + 7] as Buffer, flat[i + 8] as Buffer),
      ...wakeOf(str(flat[i + 5] as Buffer)),
    });
  }
  return found;
}

/** A shard-inputs reply: {id, taskId, definitionHash, input, wake, attempt, priority, queue, ...}. */
export function decodeInputs(flat: Buffer[]): AvailableTask[] {
  const found: AvailableTask[] = [];
  for (let i = 0; i + 7 < flat.length; i += 8) {
    found.push({
      instanceId: str(flat[i] as Buffer),
      taskId: str(flat[i + 1] as Buffer),
      input: bytes(flat[i + 3] as Buffer),
      workflowDefinitionHash: str(flat[i + 2] as Buffer),
      ...scheduleOf(flat[i + 5] as Buffer, flat[i + 6] as Buffer, flat[i + 7] as Buffer),
      ...wakeOf(str(flat[i + 4] as Buffer)),
    });
  }
  return found;
}

/**
 * Claim-next reply: {json, input, input, ...}, json = flat strings, 10 per task (id, taskId,
 * score, definitionHash, token, claimedAt, expiresAt, attempt, priority, queue), then 2 per task
 * after a wait (its place from 1, its wake), the inputs in the task order.
 */
export function decodeClaimed(reply: Buffer[], workerId: string): Array<ClaimedTask & Scored> {
  const head = reply[0];
  if (head === undefined) return [];
  const fields = JSON.parse(head.toString("utf8")) as string[] | Record<string, never>;
  if (!Array.isArray(fields)) return [];
  const out: Array<ClaimedTask & Scored> = [];
  const count = reply.length - 1;
  for (let i = 0, k = 1; k <= count && i + 9 < fields.length; i += 10, k++) {
    const instanceId = fields[i] as string;
    const taskId = fields[i + 1] as string;
    const expires = fields[i + 6] as string;
    out.push({
      instanceId,
      taskId,
      score: Number(fields[i + 2]),
      workflowDefinitionHash: fields[i + 3] as string,
      input: bytes(reply[k] as Buffer),
      ...scheduleOf(fields[i + 7] as string, fields[i + 8] as string, fields[i + 9] as string),
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
  for (let i = 10 * count; i + 1 < fields.length; i += 2) {
    const task = out[Number(fields[i]) - 1];
    if (task !== undefined) Object.assign(task, wakeOf(fields[i + 1] as string));
  }
  return out;
}

/**
 * loadEvents' reply: the order members ("name NUL sequence NUL sentAt") and the events hash
 * flat (the counter and the payloads by sequence), as pending events oldest first.
 */
export function decodeEvents(members: Buffer[], hash: Buffer[]): PendingEvent[] {
  const payloads = new Map<string, Buffer>();
  for (let i = 0; i + 1 < hash.length; i += 2) payloads.set(str(hash[i] as Buffer), hash[i + 1] as Buffer);
  const events: PendingEvent[] = [];
  for (const member of members) {
    const nameEnd = member.indexOf(0);
    const seqEnd = member.indexOf(0, nameEnd + 1);
    const seq = member.toString("latin1", nameEnd + 1, seqEnd);
    events.push({
      eventName: member.toString("utf8", 0, nameEnd),
      sequence: Number(seq),
      payload: bytes(payloads.get(seq) ?? Buffer.alloc(0)),
      sentAt: Number(member.toString("latin1", seqEnd + 1)),
    });
  }
  return events.sort((a, b) => a.sequence - b.sequence);
}
