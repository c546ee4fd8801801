/*
 * Workflow control: cancel, pause, resume. Each reads the instance document with its header,
 * judges the stored status (the kit's controlRefusal), computes the new header and index fields
 * with the kit's transitionHeader (no output is read), and commits them with one compare-and-set
 * of the document. Cancel also revokes every claim of the instance and drops its pending events
 * in that same compare-and-set; pause and resume leave claims and events as they are.
 */
import { type ControlRequest, SerializationError } from "@sayiir/persistence-core";
import {
  controlRefusal,
  fromStoredParts,
  RETRY,
  retryOnRace,
  type Transition,
  transitionHeader,
} from "@sayiir/persistence-core/adapter";
import { type MongoContext, quote, RACE } from "./context.js";
import { type EventsChange, eventBlobsOf, revokedClaims } from "./instance.js";
import { type InstanceDoc, PROJECTION } from "./layout.js";
import { collectBlobs, prunedClaims } from "./maintenance.js";
import { PendingBlobs } from "./pending-blobs.js";
import { headerBytes, placePayloads, storedStatus } from "./snapshots.js";

const OPERATION: Record<Transition, string> = {
  cancel: "cancelWorkflow",
  pause: "pauseWorkflow",
  resume: "resumeWorkflow",
};

export function cancelWorkflow(
  ctx: MongoContext,
  instanceId: string,
  request: Required<ControlRequest>,
): Promise<void> {
  return transition(ctx, instanceId, "cancel", request);
}

export function pauseWorkflow(
  ctx: MongoContext,
  instanceId: string,
  request: Required<ControlRequest>,
): Promise<void> {
  return transition(ctx, instanceId, "pause", request);
}

export function resumeWorkflow(ctx: MongoContext, instanceId: string): Promise<void> {
  return transition(ctx, instanceId, "resume", { reason: null, requestedBy: null });
}

/** The stored header, and the initial input a header of an older release still carries (else undefined). */
export interface StoredHeader {
  header: Uint8Array;
  legacyInput: Uint8Array | undefined;
}

/**
 * The header of a document (inline, or its blob: undefined when that blob is gone, i.e. a writer
 * replaced the version read). A header written before the initial input was split out still
 * carries it (and the document has no `i`/`ig`): the transition stores it as a value of its own,
 * since the new header never carries it.
 */
export async function readHeader(ctx: MongoContext, doc: InstanceDoc): Promise<StoredHeader | undefined> {
  const blobs = doc.hg === undefined ? new Map<string, Uint8Array>() : await ctx.chunks.read([doc.hg]);
  if (doc.hg !== undefined && !blobs.has(doc.hg)) return undefined;
  const header = headerBytes(doc, blobs);
  const decoded = fromStoredParts({
    instanceId: doc._id,
    header,
    initialInput: undefined,
    results: [],
    lastCompletedTaskId: null,
  });
  return { header, legacyInput: decoded.initialInput };
}

/** One transition's commit: its fields, removed fields, events change, new blobs, and what it frees. */
interface TransitionPlan {
  fields: Partial<InstanceDoc>;
  remove: string[];
  events: EventsChange | undefined;
  blobs: Array<{ id: string; bytes: Uint8Array }>;
  /** Blobs no document refers to once the commit lands: the old header's, dropped events'. */
  garbage: string[];
}

/** What a transition writes over `doc` at `now` (after controlRefusal allowed it). */
export function transitionPlan(
  kind: Transition,
  doc: InstanceDoc,
  stored: StoredHeader,
  request: Required<ControlRequest>,
  now: number,
): TransitionPlan {
  const results = doc.r ?? [];
  const next = transitionHeader(
    kind,
    {
      instanceId: doc._id,
      header: stored.header,
      lastCompletedTaskId: doc.l ?? null,
      hasResult: (taskId) => results.some((r) => r.t === taskId),
    },
    request,
    now,
  );
  const payloads = placePayloads(next.header, stored.legacyInput);
  const fields: Partial<InstanceDoc> = {
    ...payloads.fields,
    s: next.status,
    f: next.finished,
    p: next.positionTaskId,
    u: next.updatedAt,
  };
  const remove = [...payloads.remove];
  const wait = next.awaiting;
  if (wait === null) remove.push("w");
  else fields.w = { n: wait.eventName, t: wait.nextTaskId, o: wait.timeoutAt };
  const garbage = doc.hg === undefined ? [] : [doc.hg];
  let events: EventsChange | undefined;
  if (kind === "cancel") {
    // Terminal: every claim revoked (expired on every clock, entries and tokens kept), the
    // pending events dropped; a Cancelled snapshot keeps no lastCompletedTaskId.
    fields.c = revokedClaims(doc, now);
    fields.l = null;
    if ((doc.e ?? []).length > 0) events = { clear: true };
    garbage.push(...eventBlobsOf(doc));
  } else {
    const c = prunedClaims(doc, now);
    if (c !== undefined) fields.c = c;
  }
  return { fields, remove, events, blobs: payloads.blobs, garbage };
}

/**
 * One transition: read (with the header), judge, plan, write the new blobs if any (a header over
 * the inline budget; the initial input of an older release's header), then the compare-and-set.
 */
async function transition(
  ctx: MongoContext,
  instanceId: string,
  kind: Transition,
  request: Required<ControlRequest>,
): Promise<void> {
  const pending = new PendingBlobs();
  const written: string[] = [];
  let previousVersion: string | undefined;
  try {
    await retryOnRace(
      `${OPERATION[kind]}: ${quote(instanceId)}`,
      async () => {
        const doc = await ctx.read(instanceId, PROJECTION.control);
        const refusal = controlRefusal(kind, instanceId, await storedStatus(ctx, doc));
        if (refusal !== null) throw refusal;
        const current = doc as InstanceDoc;
        const stored = await readHeader(ctx, current);
        if (stored === undefined) {
          // Its header blob was replaced meanwhile: re-read. The same version twice is damage.
          if (current.v === previousVersion) throw headerMissing(instanceId);
          previousVersion = current.v;
          return RETRY;
        }
        const plan = transitionPlan(kind, current, stored, request, await ctx.now());
        const ids = plan.blobs.map((b) => b.id);
        if (ids.length > 0) {
          written.push(...ids);
          await ctx.chunks.write(plan.blobs.map((b) => ({ instanceId, ...b })));
        }
        const commit = () => ctx.commit(instanceId, current, plan.fields, plan.remove, plan.events);
        if (!(await pending.commit(ids, commit))) return RETRY;
        await collectBlobs(ctx.chunks, plan.garbage);
        return undefined;
      },
      RACE,
    );
  } finally {
    // Blobs of attempts whose commit did not land (and cannot have landed) are garbage.
    await collectBlobs(ctx.chunks, pending.collectable(written));
  }
}

const headerMissing = (instanceId: string): SerializationError =>
  new SerializationError(`snapshot ${quote(instanceId)} refers to a header that is not stored`);
