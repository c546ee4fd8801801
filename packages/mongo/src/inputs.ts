/*
 * The inputs of tasks that discovery found or claim-next claimed: read the current documents,
 * keep the tasks that can still run, and read what they run with: the last output, else the
 * initial input, else empty bytes; after a wait, the payload of the oldest pending event of its
 * name, else (its timeout passed) empty bytes.
 */
import type { AvailableTask, EventRef } from "@sayiir/persistence-core";
import { fromStoredParts } from "@sayiir/persistence-core/adapter";
import { attemptOf, scheduleOf } from "./attempts.js";
import type { MongoContext } from "./context.js";
import { eventPayload } from "./events.js";
import { claimOn, liveClaimOn, oldestEvent, runnableTask } from "./instance.js";
import { type EventEntry, type InstanceDoc, isSnapshot, PROJECTION } from "./layout.js";
import { headerBytes, initialInputBytes } from "./snapshots.js";

/** A task to read the input of: its instance, and the token of the claim just taken, if any. */
export interface InputItem {
  instanceId: string;
  taskId: string;
  token?: number;
  /**
   * The document as last read says the input is an inline payload (see `needsInline`): read it
   * in full at once instead of reading it again (a hint: a wrong one only costs a read).
   */
  inline?: boolean;
}

/** The input of a task, the definition hash of its workflow, and after a wait why it runs. */
export interface Input {
  input: Uint8Array;
  definitionHash: string;
  /** The attempt this run is (attempts count + 1), and the task's priority and queue. */
  attempt: number;
  priority: number;
  queue: string;
  event?: EventRef;
  timedOut?: true;
}

type Eligible = InstanceDoc & { d: string };

/** The available task of an item and its input. */
export function availableTask(item: InputItem, got: Input): AvailableTask {
  const task: AvailableTask = {
    instanceId: item.instanceId,
    taskId: item.taskId,
    input: got.input,
    workflowDefinitionHash: got.definitionHash,
    attempt: got.attempt,
    priority: got.priority,
    queue: got.queue,
  };
  if (got.event !== undefined) task.event = got.event;
  if (got.timedOut === true) task.timedOut = true;
  return task;
}

/**
 * The current document of an item if its task can run: a snapshot InProgress at that task (or
 * at a wait for it), without a result for it, and not under a live claim, unless `token` names
 * that claim (claim-next reading the inputs of what it just claimed).
 */
function eligible(doc: InstanceDoc | undefined, item: InputItem, now: number): Eligible | undefined {
  if (!isSnapshot(doc) || doc.f === true) return undefined;
  if (doc.s !== undefined && doc.s !== "InProgress") return undefined;
  if (runnableTask(doc) !== item.taskId) return undefined;
  if ((doc.r ?? []).some((e) => e.t === item.taskId)) return undefined;
  const live = liveClaimOn(doc, item.taskId, now);
  if (item.token === undefined ? live !== undefined : claimOn(doc, item.taskId)?.k !== item.token)
    return undefined;
  return doc;
}

/** Is the document at a wait (its task is the wait's next task)? */
const atWait = (doc: InstanceDoc): doc is InstanceDoc & { w: NonNullable<InstanceDoc["w"]> } =>
  typeof doc.p !== "string" && doc.w !== undefined;

/**
 * Why a wait's task runs now: the oldest pending event of its name, else its timeout passed at
 * `now`; undefined: neither (not runnable).
 */
function waitSource(doc: InstanceDoc, now: number): { event: EventEntry } | { timedOut: true } | undefined {
  if (!atWait(doc)) return undefined;
  const event = oldestEvent(doc, doc.w.n);
  if (event !== undefined) return { event };
  return doc.w.o !== null && doc.w.o <= now ? { timedOut: true } : undefined;
}

/** The blob of the last completed task's output: the input, unless it is the initial input. */
const outputRef = (doc: InstanceDoc): string | undefined =>
  doc.l === null || doc.l === undefined ? undefined : (doc.r ?? []).find((e) => e.t === doc.l)?.g;

/** Needs the document's inline payloads (header, initial input, or an inline event) to know the input. */
export function needsInline(doc: InstanceDoc, now: number): boolean {
  if (atWait(doc)) {
    const source = waitSource(doc, now);
    return source !== undefined && "event" in source && source.event.g === undefined;
  }
  return outputRef(doc) === undefined && (doc.hg === undefined || doc.ig === undefined);
}

/** The blobs the input of a task is read from. */
function inputBlobs(doc: InstanceDoc, now: number): string[] {
  if (atWait(doc)) {
    const source = waitSource(doc, now);
    const g = source !== undefined && "event" in source ? source.event.g : undefined;
    return g === undefined ? [] : [g];
  }
  const ref = outputRef(doc);
  if (ref !== undefined) return [ref];
  return [doc.hg, doc.ig].filter((g): g is string => g !== undefined);
}

/**
 * The documents of the items, as mutations read them (no inline payloads); those whose input is
 * an inline payload are read again in full, and judged on that newer version.
 */
async function readDocs(
  ctx: MongoContext,
  items: readonly InputItem[],
  now: number,
): Promise<Map<string, InstanceDoc>> {
  const byId = new Map<string, InstanceDoc>();
  const full = new Set(items.filter((item) => item.inline === true).map((item) => item.instanceId));
  const lean = items.filter((item) => !full.has(item.instanceId)).map((item) => item.instanceId);
  const reads = await Promise.all([
    lean.length === 0
      ? []
      : ctx.snapshots.find({ _id: { $in: lean } }, { projection: PROJECTION.state }).toArray(),
    full.size === 0 ? [] : ctx.snapshots.find({ _id: { $in: [...full] } }).toArray(),
  ]);
  for (const doc of reads.flat()) byId.set(doc._id, doc);
  const again = items
    .filter((item) => {
      const doc = eligible(byId.get(item.instanceId), item, now);
      return !full.has(item.instanceId) && doc !== undefined && needsInline(doc, now);
    })
    .map((item) => item.instanceId);
  if (again.length > 0) {
    for (const id of again) byId.delete(id);
    const full = await ctx.snapshots.find({ _id: { $in: again } }).toArray();
    for (const doc of full) byId.set(doc._id, doc);
  }
  return byId;
}

/**
 * The input of a task from its document and the blobs read (see the top of this file).
 * undefined: a blob is gone (the snapshot moved on, the event was consumed), the wait is not
 * runnable any more, or the record does not decode.
 */
function inputOf(
  doc: Eligible,
  blobs: Map<string, Uint8Array>,
  now: number,
): Pick<Input, "input" | "event" | "timedOut"> | undefined {
  if (atWait(doc)) {
    const source = waitSource(doc, now);
    if (source === undefined) return undefined;
    if (!("event" in source)) return { input: new Uint8Array(0), timedOut: true };
    const input = eventPayload(source.event, blobs);
    const event = { eventName: source.event.n, sequence: Number(source.event.q) };
    return input === undefined ? undefined : { input, event };
  }
  const ref = outputRef(doc);
  if (ref !== undefined) {
    const input = blobs.get(ref);
    return input === undefined ? undefined : { input };
  }
  if (doc.hg !== undefined && !blobs.has(doc.hg)) return undefined;
  if (doc.ig !== undefined && !blobs.has(doc.ig)) return undefined;
  try {
    const snapshot = fromStoredParts({
      instanceId: doc._id,
      header: headerBytes(doc, blobs),
      initialInput: initialInputBytes(doc, blobs),
      results: [],
      lastCompletedTaskId: null,
    });
    return { input: snapshot.initialInput ?? new Uint8Array(0) };
  } catch {
    return undefined; // a corrupt record cannot be run; loadSnapshot reports it
  }
}

/**
 * Reads the current documents of tasks and their inputs. A task whose snapshot moved on (no
 * longer at that task, completed, finished, paused) is left out, as is one under a live claim
 * that is not the item's own and one whose record cannot be decoded (loadSnapshot reports it).
 * `docs`, when given, receives every document read (by instance id; a missing one was not found).
 */
export async function readInputs(
  ctx: MongoContext,
  items: readonly InputItem[],
  now: number,
  docs?: Map<string, InstanceDoc>,
): Promise<Map<string, Input>> {
  const out = new Map<string, Input>();
  if (items.length === 0) return out;
  const byId = await readDocs(ctx, items, now);
  // The caller may want the documents as read (claim-next judges its lost candidates on them).
  if (docs !== undefined) for (const [id, doc] of byId) docs.set(id, doc);
  const plan: Array<{ doc: Eligible; item: InputItem }> = [];
  const need: string[] = [];
  for (const item of items) {
    const doc = eligible(byId.get(item.instanceId), item, now);
    if (doc === undefined) continue;
    need.push(...inputBlobs(doc, now));
    plan.push({ doc, item });
  }
  const blobs = await ctx.chunks.read(need);
  for (const { doc, item } of plan) {
    const got = inputOf(doc, blobs, now);
    if (got === undefined) continue;
    const { priority, queue } = scheduleOf(doc);
    const attempt = attemptOf(doc, item.taskId);
    out.set(doc._id, { ...got, definitionHash: doc.d, attempt, priority, queue });
  }
  return out;
}
