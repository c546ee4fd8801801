/*
 * completeTasks with `next` (one write per workflow step), the pure part: the completions of one
 * instance judged one by one, in batch order, on the document as read (its header, results
 * entries, claims and pending events; never an output) and folded into ONE compare-and-set. A
 * completion with `next` is judged by the kit's stepRefusal and moves the header, the status, the
 * position, the wait, the schedule and the index fields as the kit's advanceHeader computes them;
 * one without `next` is today's completion (resultRefusal: the result in, the claim out).
 */
import {
  type CompletionOutcome,
  type EventRef,
  type NextStep,
  type PersistenceError,
  positionTaskId,
  SerializationError,
} from "@sayiir/persistence-core";
import {
  advanceHeader,
  fromStoredParts,
  resultRefusal,
  type StepWrite,
  stepRefusal,
} from "@sayiir/persistence-core/adapter";
import { scheduleEntry } from "./attempts.js";
import type { StoredHeader } from "./control.js";
import { type Completing, type EventsChange, oldestEvent, resultRef, storedClaim } from "./instance.js";
import { type EventEntry, type InstanceDoc, isSnapshot, type ResultRef } from "./layout.js";
import { isStale } from "./maintenance.js";
import { placePayloads } from "./snapshots.js";

/** One completion of a batch that holds a step: with `next` (and `consumeEvent`), or without. */
export interface Stepping extends Completing {
  next?: NextStep;
  consumeEvent?: EventRef;
}

/** What one compare-and-set of an instance document does for its completions (steps among them). */
export interface StepPlan {
  /** Per completion (same order): null when it goes into this commit, else why not. */
  outcomes: CompletionOutcome[];
  /** The commit: fields set, fields removed, the events change; undefined when nothing is accepted. */
  commit: { fields: Partial<InstanceDoc>; remove: string[]; events: EventsChange | undefined } | undefined;
  /** New blobs the commit refers to (a header over the inline budget, an older header's initial input). */
  blobs: Array<{ id: string; bytes: Uint8Array }>;
  /** The output blobs of the batch the commit refers to (kept once it lands). */
  kept: string[];
  /** Blobs no document refers to once the commit lands: replaced results, old header, consumed events. */
  garbage: string[];
}

const noHeader = (instanceId: string): PersistenceError =>
  new SerializationError(`snapshot ${JSON.stringify(instanceId)} has no readable header`);

/** The stored header's state as the step judges it: paused, and the task its position runs. */
function headerState(
  instanceId: string,
  header: Uint8Array,
): { paused: boolean; positionTask: string | null } | PersistenceError {
  try {
    const parts = { instanceId, header, initialInput: undefined, results: [], lastCompletedTaskId: null };
    const state = fromStoredParts(parts).state;
    return {
      paused: state.kind === "Paused",
      positionTask: state.kind === "InProgress" ? positionTaskId(state.position) : null,
    };
  } catch (error) {
    return error as PersistenceError;
  }
}

/** The instance as the completions before the current one leave it (the fold's state). */
interface Fold {
  r: ResultRef[];
  l: string | null;
  u: number;
  finished: boolean;
  status: InstanceDoc["s"];
  /** The current header (undefined: unreadable, see `unreadable`). */
  header: Uint8Array | undefined;
  unreadable: PersistenceError | null;
  /** Pending events left (no payloads), the sequences consumed, and whether all are dropped. */
  events: EventEntry[];
  pulled: number[];
  cleared: boolean;
  /** The last accepted step's write (its header, status and index fields are the commit's). */
  stepped: StepWrite | undefined;
  released: Set<string>;
}

/** What a completion is judged on: the fold's state and the claim on its task as read, at `now`. */
function viewOf(
  doc: InstanceDoc | null,
  fold: Pick<Fold, "finished" | "status">,
  taskId: string,
  now: number,
) {
  return {
    found: isSnapshot(doc),
    finished: fold.finished,
    cancelled: fold.status === "Cancelled",
    paused: fold.status === "Paused",
    claim: storedClaim(doc, taskId),
    now,
  };
}

/** One completion with `next`, judged (stepRefusal) and, if accepted, applied to the fold. */
function advance(
  instanceId: string,
  doc: InstanceDoc,
  fold: Fold,
  item: Stepping,
  now: number,
): CompletionOutcome {
  const base = viewOf(doc, fold, item.taskId, now);
  const fenced = resultRefusal(instanceId, item, base);
  if (fenced !== null) return fenced;
  const header = fold.header;
  if (header === undefined) return fold.unreadable ?? noHeader(instanceId);
  const state = headerState(instanceId, header);
  if (state instanceof Error) return state;
  const event = item.consumeEvent;
  const oldest = event === undefined ? undefined : oldestEvent({ e: fold.events }, event.eventName)?.q;
  const view = { ...base, paused: base.paused || state.paused, positionTask: state.positionTask };
  const refusal = stepRefusal(instanceId, item, view, event, oldest);
  if (refusal !== null || item.next === undefined) return refusal;
  const results = fold.r;
  const write = advanceHeader(
    { instanceId, header, lastCompletedTaskId: fold.l, hasResult: (t) => results.some((e) => e.t === t) },
    item.taskId,
    item.next,
    Math.max(fold.u, now),
  );
  fold.stepped = write;
  fold.header = write.header;
  fold.status = write.status;
  fold.finished = write.finished;
  fold.l = write.lastCompletedTaskId;
  fold.u = write.updatedAt;
  fold.r = write.keepsResults ? [...fold.r.filter((e) => e.t !== item.taskId), resultRef(item)] : [];
  if (event !== undefined) {
    fold.pulled.push(event.sequence);
    fold.events = fold.events.filter((e) => e.q !== event.sequence);
  }
  if (write.finished) {
    fold.cleared = true;
    fold.events = [];
  }
  fold.released.add(item.taskId);
  return null;
}

/** One completion without `next` (today's completion), judged and, if accepted, applied to the fold. */
function complete(
  instanceId: string,
  doc: InstanceDoc,
  fold: Fold,
  item: Stepping,
  now: number,
): CompletionOutcome {
  const refusal = resultRefusal(instanceId, item, viewOf(doc, fold, item.taskId, now));
  if (refusal !== null) return refusal;
  fold.r = [...fold.r.filter((e) => e.t !== item.taskId), resultRef(item)];
  fold.l = item.taskId;
  fold.u = Math.max(fold.u, now);
  fold.released.add(item.taskId);
  return null;
}

/**
 * Judges each completion on this version of the document at `now` (the store's clock), in batch
 * order, each on the state the ones before it leave, and folds the accepted ones into one commit.
 * `stored` is the document's header (read when any completion has `next`; an error when it cannot
 * be decoded: the steps are refused with it, the plain completions go on).
 */
export function stepPlan(
  instanceId: string,
  doc: InstanceDoc | null,
  stored: StoredHeader | PersistenceError | undefined,
  items: readonly Stepping[],
  now: number,
): StepPlan {
  const none = { commit: undefined, blobs: [], kept: [], garbage: [] };
  if (!isSnapshot(doc)) {
    const missing = { finished: false, status: undefined };
    const outcomes = items.map((item) =>
      resultRefusal(instanceId, item, viewOf(doc, missing, item.taskId, now)),
    );
    return { outcomes, ...none };
  }
  const fold: Fold = {
    r: [...(doc.r ?? [])],
    l: doc.l ?? null,
    u: Number(doc.u ?? 0),
    finished: doc.f === true,
    status: doc.s,
    header: stored instanceof Error || stored === undefined ? undefined : stored.header,
    unreadable: stored instanceof Error ? stored : stored === undefined ? noHeader(instanceId) : null,
    events: [...(doc.e ?? [])],
    pulled: [],
    cleared: false,
    stepped: undefined,
    released: new Set(),
  };
  const outcomes = items.map((item) =>
    item.next === undefined
      ? complete(instanceId, doc, fold, item, now)
      : advance(instanceId, doc, fold, item, now),
  );
  if (fold.released.size === 0) return { outcomes, ...none };
  const legacyInput = stored instanceof Error ? undefined : stored?.legacyInput;
  return { outcomes, ...commitOf(doc, fold, legacyInput, items, now) };
}

/** The commit of a fold with at least one accepted completion, its new blobs and its garbage. */
function commitOf(
  doc: InstanceDoc,
  fold: Fold,
  legacyInput: Uint8Array | undefined,
  items: readonly Stepping[],
  now: number,
): Omit<StepPlan, "outcomes"> {
  const fields: Partial<InstanceDoc> = {
    r: fold.r,
    l: fold.l,
    u: fold.u,
    c: (doc.c ?? []).filter((e) => !fold.released.has(e.t) && !isStale(e, now)),
  };
  const remove: string[] = [];
  let blobs: StepPlan["blobs"] = [];
  const garbage: string[] = [];
  const stepped = fold.stepped;
  if (stepped !== undefined && fold.header !== undefined) {
    Object.assign(fields, { s: fold.status, f: fold.finished, p: stepped.positionTaskId });
    const payloads = placePayloads(fold.header, legacyInput);
    Object.assign(fields, payloads.fields);
    remove.push(...payloads.remove);
    blobs = payloads.blobs;
    if (doc.hg !== undefined) garbage.push(doc.hg);
    const wait = stepped.awaiting;
    if (wait === null) remove.push("w");
    else fields.w = { n: wait.eventName, t: wait.nextTaskId, o: wait.timeoutAt };
    const schedule = scheduleEntry(stepped.schedule);
    if (schedule === undefined) remove.push("sc");
    else fields.sc = schedule;
  }
  const referenced = new Set(fold.r.map((e) => e.g));
  garbage.push(...(doc.r ?? []).map((e) => e.g).filter((g) => !referenced.has(g)));
  const events = doc.e ?? [];
  const gone = fold.cleared ? events : events.filter((e) => fold.pulled.includes(e.q));
  garbage.push(...gone.flatMap((e) => (e.g === undefined ? [] : [e.g])));
  let change: EventsChange | undefined;
  if (fold.cleared) change = events.length > 0 ? { clear: true } : undefined;
  else if (fold.pulled.length > 0) change = { pull: fold.pulled };
  const kept = items.map((item) => item.blobId).filter((g) => referenced.has(g));
  return { commit: { fields, remove, events: change }, blobs, kept, garbage };
}
