import { EMPTY_BYTES } from "./bytes.js";
import { SerializationError } from "./errors.js";
import {
  type ExecutionPosition,
  setCompletedTask,
  type TaskAttempts,
  type TaskResult,
  type TaskSchedule,
  type WorkflowSnapshot,
  type WorkflowState,
} from "./snapshot.js";

/*
 * Stored form of a snapshot:
 *
 *   "SYR" | version (1 byte) | header length (u32 BE) | header (UTF-8 JSON) | blobs
 *
 * Byte values are not put in the JSON (base64 would grow them by a third and cost a pass);
 * the header refers to them by index into the blob section, where each blob is a u32 BE
 * length followed by its bytes. Bumping FORMAT_VERSION is how a future layout is told apart.
 * Version 2 added the Paused and Cancelled states and the AwaitingEvent position; version 1
 * records, which cannot hold them, still decode. A snapshot that uses none of them is still
 * written as version 1, so workers of the previous release keep reading it during an upgrade.
 */
export const FORMAT_VERSION = 2;
/** Versions this release reads: 1 (no control states, no event waits) and 2. */
const READABLE_VERSIONS: ReadonlySet<number> = new Set([1, 2]);
const MAGIC = [0x53, 0x59, 0x52] as const; // "SYR"
const PREFIX_LENGTH = 4 + 4;

type Blob = number;
interface Header {
  i: string;
  d: string;
  c: number;
  u: number;
  in?: Blob;
  /** Attempts, in whole-snapshot encodings only (adapters that split keep them beside the header). */
  a?: StoredAttempt[];
  s:
    | { k: "InProgress"; p: ExecutionPosition; t?: Array<[string, Blob]>; l?: string | null }
    | { k: "Completed"; o: Blob }
    | { k: "Failed"; e: string }
    | {
        k: "Paused";
        p: ExecutionPosition;
        t?: Array<[string, Blob]>;
        l?: string | null;
        r: string | null;
        b: string | null;
        at: number;
      }
    | {
        k: "Cancelled";
        t?: Array<[string, Blob]>;
        r: string | null;
        b: string | null;
        at: number;
        x: string | null;
      };
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** Does the snapshot use what only version 2 can hold (Paused, Cancelled, AwaitingEvent)? */
function needsVersion2(snapshot: WorkflowSnapshot, includeTasks: boolean): boolean {
  const state = snapshot.state;
  if (state.kind === "Paused" || state.kind === "Cancelled") return true;
  if (includeTasks && snapshot.attempts !== undefined) return true;
  if (state.kind !== "InProgress") return false;
  const p = state.position;
  if (p.kind === "AwaitingEvent") return true;
  return p.kind === "AtTask" && (p.runAt !== undefined || p.priority !== undefined || p.queue !== undefined);
}

function encode(snapshot: WorkflowSnapshot, includeTasks: boolean): Uint8Array {
  const blobs: Uint8Array[] = [];
  const ref = (bytes: Uint8Array): Blob => blobs.push(bytes) - 1;
  const state = snapshot.state;
  const tasks = (results: Record<string, TaskResult>): Array<[string, Blob]> =>
    Object.values(results).map((r) => [r.taskId, ref(r.output)]);
  let s: Header["s"];
  switch (state.kind) {
    case "InProgress":
      s = { k: "InProgress", p: state.position };
      if (includeTasks) {
        s.t = tasks(state.completedTasks);
        s.l = state.lastCompletedTaskId;
      }
      break;
    case "Paused":
      s = { k: "Paused", p: state.position, r: state.reason, b: state.requestedBy, at: state.pausedAt };
      if (includeTasks) {
        s.t = tasks(state.completedTasks);
        s.l = state.lastCompletedTaskId;
      }
      break;
    case "Cancelled":
      s = {
        k: "Cancelled",
        r: state.reason,
        b: state.requestedBy,
        at: state.cancelledAt,
        x: state.interruptedAtTaskId,
      };
      if (includeTasks) s.t = tasks(state.completedTasks);
      break;
    case "Completed":
      s = { k: "Completed", o: ref(state.finalOutput) };
      break;
    default:
      s = { k: "Failed", e: state.error };
  }
  const header: Header = {
    i: snapshot.instanceId,
    d: snapshot.definitionHash,
    c: snapshot.createdAt,
    u: snapshot.updatedAt,
    s,
  };
  if (snapshot.initialInput !== undefined) header.in = ref(snapshot.initialInput);
  if (includeTasks && snapshot.attempts !== undefined) header.a = writeAttempts(snapshot.attempts);
  const json = textEncoder.encode(JSON.stringify(header));
  let total = PREFIX_LENGTH + json.byteLength;
  for (const blob of blobs) total += 4 + blob.byteLength;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[3] = needsVersion2(snapshot, includeTasks) ? FORMAT_VERSION : 1;
  view.setUint32(4, json.byteLength);
  out.set(json, PREFIX_LENGTH);
  let offset = PREFIX_LENGTH + json.byteLength;
  for (const blob of blobs) {
    view.setUint32(offset, blob.byteLength);
    out.set(blob, offset + 4);
    offset += 4 + blob.byteLength;
  }
  return out;
}

/** Encodes a whole snapshot, task outputs included. */
export function encodeSnapshot(snapshot: WorkflowSnapshot): Uint8Array {
  return encode(snapshot, true);
}

/**
 * Encodes everything but the completed tasks and lastCompletedTaskId, for adapters that store
 * task outputs as records of their own (so a task result never rewrites the snapshot). The
 * results of InProgress, Paused and Cancelled states are then given back to decodeSnapshotHeader.
 */
export function encodeSnapshotHeader(snapshot: WorkflowSnapshot): Uint8Array {
  return encode(snapshot, false);
}

class Corrupt extends Error {}

function need(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Corrupt(what);
}
const isStr = (v: unknown): v is string => typeof v === "string";
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The optional schedule fields of a position, as stored (only those present). */
function readSchedule(p: Record<string, unknown>, withRunAt: boolean): TaskSchedule {
  const schedule: TaskSchedule = {};
  if (withRunAt && p.runAt !== undefined) {
    need(isInt(p.runAt), "position.runAt");
    schedule.runAt = p.runAt;
  }
  if (p.priority !== undefined) {
    need(isInt(p.priority) && p.priority >= 1 && p.priority <= 5, "position.priority");
    schedule.priority = p.priority;
  }
  if (p.queue !== undefined) {
    need(isStr(p.queue), "position.queue");
    schedule.queue = p.queue;
  }
  return schedule;
}

/** Attempts as stored: [taskId, count, lastError, lastFailedAt, retryAt?] per task. */
type StoredAttempt = [string, number, string | null, number | null, (number | null)?];

function writeAttempts(attempts: Record<string, TaskAttempts>): StoredAttempt[] {
  return Object.entries(attempts).map(([taskId, a]) => {
    const row: StoredAttempt = [taskId, a.count, a.lastError, a.lastFailedAt];
    if (a.retryAt !== undefined) row.push(a.retryAt);
    return row;
  });
}

/** Reads attempts as writeAttempts stored them (also used by adapters that keep them beside the header). */
export function readAttempts(rows: unknown): Record<string, TaskAttempts> {
  const out: Record<string, TaskAttempts> = {};
  try {
    need(Array.isArray(rows), "attempts");
    for (const row of rows) {
      need(Array.isArray(row) && (row.length === 4 || row.length === 5), "attempt");
      const [taskId, count, lastError, lastFailedAt, retryAt] = row as unknown[];
      need(isStr(taskId) && isInt(count), "attempt task and count");
      need(lastError === null || isStr(lastError), "attempt lastError");
      need(lastFailedAt === null || isInt(lastFailedAt), "attempt lastFailedAt");
      const entry: TaskAttempts = { count, lastError, lastFailedAt };
      if (row.length === 5) {
        need(retryAt === null || isInt(retryAt), "attempt retryAt");
        entry.retryAt = retryAt as number | null;
      }
      Object.defineProperty(out, taskId, {
        value: entry,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
  } catch (error) {
    if (error instanceof Corrupt)
      throw new SerializationError(`stored attempts could not be decoded (${error.message})`);
    throw error;
  }
  return out;
}

function readPosition(p: unknown): ExecutionPosition {
  need(isObj(p), "position");
  const branches = (v: unknown): string[] => {
    need(Array.isArray(v) && v.every(isStr), "completedBranches");
    return [...v];
  };
  switch (p.kind) {
    case "NotStarted":
      return { kind: "NotStarted" };
    case "AtTask":
      need(isStr(p.taskId), "position.taskId");
      return { kind: "AtTask", taskId: p.taskId, ...readSchedule(p, true) };
    case "AtFork":
      need(isStr(p.branchId), "position.branchId");
      return { kind: "AtFork", branchId: p.branchId, completedBranches: branches(p.completedBranches) };
    case "AtJoin":
      need(isStr(p.joinId), "position.joinId");
      return { kind: "AtJoin", joinId: p.joinId, completedBranches: branches(p.completedBranches) };
    case "AwaitingEvent":
      need(isStr(p.eventName) && isStr(p.nextTaskId), "position.eventName / nextTaskId");
      need(p.timeoutAt === null || isInt(p.timeoutAt), "position.timeoutAt");
      return {
        kind: "AwaitingEvent",
        eventName: p.eventName,
        nextTaskId: p.nextTaskId,
        timeoutAt: p.timeoutAt,
        ...readSchedule(p, false),
      };
    default:
      throw new Corrupt("position.kind");
  }
}

export type Split = {
  results: Iterable<TaskResult>;
  lastCompletedTaskId: string | null;
  updatedAt?: number;
  /** Attempts stored beside the header (none recorded: empty or absent). */
  attempts?: Record<string, TaskAttempts>;
};

/** The completed tasks: from the parts stored beside the header, else from the header itself. */
function readTasks(
  s: Record<string, unknown>,
  blob: (index: unknown) => Uint8Array,
  split: Split | undefined,
): Record<string, TaskResult> {
  const completedTasks: Record<string, TaskResult> = {};
  if (split) {
    for (const r of split.results) setCompletedTask(completedTasks, { taskId: r.taskId, output: r.output });
    return completedTasks;
  }
  need(Array.isArray(s.t), "completed tasks");
  for (const entry of s.t) {
    need(Array.isArray(entry) && entry.length === 2 && isStr(entry[0]), "completed task");
    setCompletedTask(completedTasks, { taskId: entry[0], output: blob(entry[1]) });
  }
  return completedTasks;
}

function readLast(s: Record<string, unknown>, tasks: Record<string, TaskResult>, split: Split | undefined) {
  const last = split ? split.lastCompletedTaskId : s.l;
  need(last === null || isStr(last), "lastCompletedTaskId");
  need(last === null || Object.hasOwn(tasks, last), "lastCompletedTaskId names no completed task");
  return last;
}

const isText = (v: unknown): v is string | null => v === null || isStr(v);

function readState(
  s: Record<string, unknown>,
  version: number,
  blob: (index: unknown) => Uint8Array,
  split: Split | undefined,
): WorkflowState {
  if (s.k === "InProgress") {
    const completedTasks = readTasks(s, blob, split);
    const position = readPosition(s.p);
    need(version >= 2 || position.kind !== "AwaitingEvent", "position kind of a version-1 record");
    return {
      kind: "InProgress",
      position,
      completedTasks,
      lastCompletedTaskId: readLast(s, completedTasks, split),
    };
  }
  if (s.k === "Completed") return { kind: "Completed", finalOutput: blob(s.o) };
  if (s.k === "Failed") {
    need(isStr(s.e), "error");
    return { kind: "Failed", error: s.e };
  }
  need(version >= 2, "state kind of a version-1 record");
  need(isText(s.r) && isText(s.b) && isInt(s.at), "control fields");
  if (s.k === "Paused") {
    const completedTasks = readTasks(s, blob, split);
    return {
      kind: "Paused",
      reason: s.r,
      requestedBy: s.b,
      pausedAt: s.at,
      position: readPosition(s.p),
      completedTasks,
      lastCompletedTaskId: readLast(s, completedTasks, split),
    };
  }
  if (s.k === "Cancelled") {
    need(isText(s.x), "interruptedAtTaskId");
    return {
      kind: "Cancelled",
      reason: s.r,
      requestedBy: s.b,
      cancelledAt: s.at,
      completedTasks: readTasks(s, blob, split),
      interruptedAtTaskId: s.x,
    };
  }
  throw new Corrupt("state kind");
}

function decode(data: Uint8Array, instanceId: string, split?: Split): WorkflowSnapshot {
  try {
    need(data instanceof Uint8Array && data.byteLength >= PREFIX_LENGTH, "too short");
    need(data[0] === MAGIC[0] && data[1] === MAGIC[1] && data[2] === MAGIC[2], "not a snapshot record");
    const version = data[3] ?? 0;
    if (!READABLE_VERSIONS.has(version)) {
      throw new SerializationError(
        `snapshot ${JSON.stringify(instanceId)} has stored format version ${version}; this release reads versions 1 to ${FORMAT_VERSION}`,
      );
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const headerLength = view.getUint32(4);
    need(PREFIX_LENGTH + headerLength <= data.byteLength, "header length");
    const header: unknown = JSON.parse(
      textDecoder.decode(data.subarray(PREFIX_LENGTH, PREFIX_LENGTH + headerLength)),
    );
    const blobs: Uint8Array[] = [];
    let offset = PREFIX_LENGTH + headerLength;
    while (offset < data.byteLength) {
      need(offset + 4 <= data.byteLength, "blob length");
      const length = view.getUint32(offset);
      need(offset + 4 + length <= data.byteLength, "blob bounds");
      blobs.push(new Uint8Array(data.buffer, data.byteOffset + offset + 4, length));
      offset += 4 + length;
    }
    const blob = (index: unknown): Uint8Array => {
      need(isInt(index) && index < blobs.length, "blob reference");
      return blobs[index] ?? EMPTY_BYTES;
    };
    need(isObj(header), "header");
    need(isStr(header.i) && isStr(header.d) && isInt(header.c) && isInt(header.u), "header fields");
    need(header.i === instanceId, "record belongs to another instance");
    const s = header.s;
    need(isObj(s), "state");
    const state = readState(s, version, blob, split);
    const snapshot: WorkflowSnapshot = {
      instanceId: header.i,
      definitionHash: header.d,
      state,
      createdAt: header.c,
      updatedAt: split?.updatedAt ?? header.u,
    };
    if (header.in !== undefined) snapshot.initialInput = blob(header.in);
    if (split?.attempts !== undefined) {
      if (Object.keys(split.attempts).length > 0) snapshot.attempts = split.attempts;
    } else if (header.a !== undefined) {
      snapshot.attempts = readAttempts(header.a);
    }
    return snapshot;
  } catch (error) {
    if (error instanceof SerializationError) throw error;
    const why = error instanceof Corrupt ? error.message : "undecodable data";
    throw new SerializationError(`snapshot ${JSON.stringify(instanceId)} could not be decoded (${why})`, {
      cause: error,
    });
  }
}

/** Decodes what encodeSnapshot wrote. Anything else gives a SerializationError naming the instance. */
export function decodeSnapshot(data: Uint8Array, instanceId: string): WorkflowSnapshot {
  return decode(data, instanceId);
}

/** Decodes what encodeSnapshotHeader wrote, joined with the task results stored beside it. */
export function decodeSnapshotHeader(data: Uint8Array, instanceId: string, parts: Split): WorkflowSnapshot {
  return decode(data, instanceId, parts);
}
