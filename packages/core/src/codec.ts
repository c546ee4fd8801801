import { EMPTY_BYTES } from "./bytes.js";
import { SerializationError } from "./errors.js";
import {
  type ExecutionPosition,
  setCompletedTask,
  type TaskResult,
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
 */
export const FORMAT_VERSION = 1;
const MAGIC = [0x53, 0x59, 0x52] as const; // "SYR"
const PREFIX_LENGTH = 4 + 4;

type Blob = number;
interface Header {
  i: string;
  d: string;
  c: number;
  u: number;
  in?: Blob;
  s:
    | { k: "InProgress"; p: ExecutionPosition; t?: Array<[string, Blob]>; l?: string | null }
    | { k: "Completed"; o: Blob }
    | { k: "Failed"; e: string };
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

function encode(snapshot: WorkflowSnapshot, includeTasks: boolean): Uint8Array {
  const blobs: Uint8Array[] = [];
  const ref = (bytes: Uint8Array): Blob => blobs.push(bytes) - 1;
  const state = snapshot.state;
  let s: Header["s"];
  if (state.kind === "InProgress") {
    s = { k: "InProgress", p: state.position };
    if (includeTasks) {
      s.t = Object.values(state.completedTasks).map((r) => [r.taskId, ref(r.output)]);
      s.l = state.lastCompletedTaskId;
    }
  } else if (state.kind === "Completed") {
    s = { k: "Completed", o: ref(state.finalOutput) };
  } else {
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
  const json = textEncoder.encode(JSON.stringify(header));
  let total = PREFIX_LENGTH + json.byteLength;
  for (const blob of blobs) total += 4 + blob.byteLength;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[3] = FORMAT_VERSION;
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
 * task outputs as records of their own (so a task result never rewrites the snapshot).
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
      return { kind: "AtTask", taskId: p.taskId };
    case "AtFork":
      need(isStr(p.branchId), "position.branchId");
      return { kind: "AtFork", branchId: p.branchId, completedBranches: branches(p.completedBranches) };
    case "AtJoin":
      need(isStr(p.joinId), "position.joinId");
      return { kind: "AtJoin", joinId: p.joinId, completedBranches: branches(p.completedBranches) };
    default:
      throw new Corrupt("position.kind");
  }
}

function decode(
  data: Uint8Array,
  instanceId: string,
  split?: { results: Iterable<TaskResult>; lastCompletedTaskId: string | null; updatedAt?: number },
): WorkflowSnapshot {
  try {
    need(data instanceof Uint8Array && data.byteLength >= PREFIX_LENGTH, "too short");
    need(data[0] === MAGIC[0] && data[1] === MAGIC[1] && data[2] === MAGIC[2], "not a snapshot record");
    if (data[3] !== FORMAT_VERSION) {
      throw new SerializationError(
        `snapshot ${JSON.stringify(instanceId)} has stored format version ${data[3]}; this release reads version ${FORMAT_VERSION}`,
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
    let state: WorkflowState;
    if (s.k === "InProgress") {
      const completedTasks: Record<string, TaskResult> = {};
      let last: string | null;
      if (split) {
        for (const r of split.results)
          setCompletedTask(completedTasks, { taskId: r.taskId, output: r.output });
        last = split.lastCompletedTaskId;
      } else {
        need(Array.isArray(s.t), "completed tasks");
        for (const entry of s.t) {
          need(Array.isArray(entry) && entry.length === 2 && isStr(entry[0]), "completed task");
          setCompletedTask(completedTasks, { taskId: entry[0], output: blob(entry[1]) });
        }
        need(s.l === null || isStr(s.l), "lastCompletedTaskId");
        last = s.l;
      }
      need(
        last === null || Object.hasOwn(completedTasks, last),
        "lastCompletedTaskId names no completed task",
      );
      state = { kind: "InProgress", position: readPosition(s.p), completedTasks, lastCompletedTaskId: last };
    } else if (s.k === "Completed") {
      state = { kind: "Completed", finalOutput: blob(s.o) };
    } else if (s.k === "Failed") {
      need(isStr(s.e), "error");
      state = { kind: "Failed", error: s.e };
    } else {
      throw new Corrupt("state kind");
    }
    const snapshot: WorkflowSnapshot = {
      instanceId: header.i,
      definitionHash: header.d,
      state,
      createdAt: header.c,
      updatedAt: split?.updatedAt ?? header.u,
    };
    if (header.in !== undefined) snapshot.initialInput = blob(header.in);
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
export function decodeSnapshotHeader(
  data: Uint8Array,
  instanceId: string,
  parts: { results: Iterable<TaskResult>; lastCompletedTaskId: string | null; updatedAt?: number },
): WorkflowSnapshot {
  return decode(data, instanceId, parts);
}
