/*
 * Snapshots: save, load, delete, list. A snapshot is the instance document (its index fields and
 * the references of its blobs) plus blobs in the outputs collection: one per task output, and the
 * header and the initial input when they do not fit inline. Blobs are written first, under fresh
 * ids; the compare-and-set of the instance document is the commit point.
 */
import {
  copyBytes,
  EMPTY_BYTES,
  type EventRef,
  type Fence,
  failures,
  SerializationError,
  type SnapshotPage,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  fromStoredParts,
  RETRY,
  retryOnRace,
  type StoredStatus,
  snapshotRefusal,
  toStoredSnapshot,
} from "@sayiir/persistence-core/adapter";
import type { Document } from "mongodb";
import { attemptEntries, scheduleEntry, storedAttempts } from "./attempts.js";
import { binaryBytes, digest, newBlobId } from "./chunks.js";
import { markLapsed } from "./claims.js";
import { type MongoContext, quote, RACE } from "./context.js";
import { consumption, eventBlobsOf, lapsedClaims, writeView } from "./instance.js";
import {
  decodeCursor,
  encodeCursor,
  INLINE_BYTES,
  type InstanceDoc,
  isSnapshot,
  PROJECTION,
  type ResultRef,
} from "./layout.js";
import { collectBlobs, hasExpiringClaims, prunedClaims } from "./maintenance.js";
import { PendingBlobs } from "./pending-blobs.js";

/**
 * What one saveSnapshot writes: the document fields (all but the results entries), the fields it
 * removes, the outputs (each with its size and SHA-256: a stored one that matches is kept, see
 * resultEntries) and the header and initial-input blobs.
 */
export interface SnapshotWrite {
  fields: Partial<InstanceDoc>;
  remove: string[];
  results: PlannedResult[];
  /** The header and the initial input when they do not fit inline (always new blobs). */
  blobs: Array<{ id: string; bytes: Uint8Array }>;
  /** Completed, Failed or Cancelled: the write may finish a workflow, never reopen one. */
  finished: boolean;
  /** The status it writes (what snapshotRefusal judges). */
  status: StoredStatus;
}

/** One output of a snapshot to save, with its size and SHA-256. */
export interface PlannedResult {
  taskId: string;
  bytes: Uint8Array;
  hash: Uint8Array;
}

/** The header and initial-input fields of a write, the fields it removes, and its blobs. */
export interface PayloadPlacement {
  fields: Pick<InstanceDoc, "h" | "hg" | "i" | "ig">;
  remove: string[];
  blobs: Array<{ id: string; bytes: Uint8Array }>;
}

/**
 * Where a header and an initial input go: the header, then the initial input, inline while
 * together they fit INLINE_BYTES, else blobs. `input` null: none (both fields removed);
 * undefined: the stored one stays as it is (only the header is placed).
 */
export function placePayloads(header: Uint8Array, input: Uint8Array | null | undefined): PayloadPlacement {
  const fields: PayloadPlacement["fields"] = {};
  const remove: string[] = [];
  const blobs: PayloadPlacement["blobs"] = [];
  let inline = 0;
  if (header.byteLength <= INLINE_BYTES) {
    fields.h = header;
    inline = header.byteLength;
    remove.push("hg");
  } else {
    fields.hg = newBlobId();
    blobs.push({ id: fields.hg, bytes: header });
    remove.push("h");
  }
  if (input === null) {
    remove.push("i", "ig");
  } else if (input === undefined) {
    // kept as stored
  } else if (inline + input.byteLength <= INLINE_BYTES) {
    fields.i = input;
    remove.push("ig");
  } else {
    fields.ig = newBlobId();
    blobs.push({ id: fields.ig, bytes: input });
    remove.push("i");
  }
  return { fields, remove, blobs };
}

/**
 * Splits a snapshot into its stored form (toStoredSnapshot): every output a blob of its own; the
 * header, then the initial input, inline while together they fit INLINE_BYTES, else blobs; the
 * status, and the wait `w` of an InProgress AwaitingEvent position.
 */
export function planSnapshot(snapshot: WorkflowSnapshot): SnapshotWrite {
  const stored = toStoredSnapshot(snapshot);
  const results = stored.results.map((r) => ({ taskId: r.taskId, bytes: r.output, hash: digest(r.output) }));
  const payloads = placePayloads(stored.header, stored.initialInput);
  const fields: Partial<InstanceDoc> = {
    d: stored.definitionHash,
    f: stored.finished,
    s: stored.status,
    p: stored.positionTaskId,
    l: stored.lastCompletedTaskId,
    u: stored.updatedAt,
    ...payloads.fields,
  };
  const remove = [...payloads.remove];
  const schedule = scheduleEntry(stored.schedule);
  if (schedule === undefined) remove.push("sc");
  else fields.sc = schedule;
  // The snapshot's own attempts replace the stored ones (like its results).
  if (stored.attempts.length === 0) remove.push("at");
  else fields.at = attemptEntries(stored.attempts);
  const wait = stored.awaiting;
  if (wait === null) remove.push("w");
  else fields.w = { n: wait.eventName, t: wait.nextTaskId, o: wait.timeoutAt };
  return {
    fields,
    remove,
    results,
    blobs: payloads.blobs,
    finished: stored.finished,
    status: stored.status,
  };
}

/** Does a stored results entry hold exactly this output (same size and SHA-256)? */
function holds(ref: ResultRef, result: PlannedResult): boolean {
  if (ref.z === undefined || ref.x === undefined || Number(ref.z) !== result.bytes.byteLength) return false;
  try {
    return Buffer.from(binaryBytes(ref.x)).equals(result.hash);
  } catch {
    return false;
  }
}

/**
 * The results entries of a saveSnapshot over `doc`: an output whose stored entry has the same
 * size and SHA-256 keeps its blob (not written again, not collected); else the blob this call
 * wrote for it in an earlier attempt (`ours`); else a new blob, listed in `missing` (to write
 * before the commit). Outputs are never read to decide this.
 */
export function resultEntries(
  results: readonly PlannedResult[],
  doc: InstanceDoc | null,
  ours: ReadonlyMap<string, string>,
): { entries: ResultRef[]; missing: Array<{ taskId: string; id: string; bytes: Uint8Array }> } {
  const stored = new Map((isSnapshot(doc) && Array.isArray(doc.r) ? doc.r : []).map((e) => [e.t, e]));
  const missing: Array<{ taskId: string; id: string; bytes: Uint8Array }> = [];
  const entries = results.map((result): ResultRef => {
    const previous = stored.get(result.taskId);
    const entry = { t: result.taskId, z: result.bytes.byteLength, x: result.hash };
    if (previous !== undefined && holds(previous, result)) return { ...entry, g: previous.g };
    let id = ours.get(result.taskId);
    if (id === undefined) {
      id = newBlobId();
      missing.push({ taskId: result.taskId, id, bytes: result.bytes });
    }
    return { ...entry, g: id };
  });
  return { entries, missing };
}

/** The blob ids a stored snapshot document refers to: outputs, header, initial input. */
export function blobsOf(doc: Pick<InstanceDoc, "r" | "hg" | "ig">): string[] {
  const ids = (Array.isArray(doc.r) ? doc.r : []).map((e) => e.g);
  if (doc.hg !== undefined) ids.push(doc.hg);
  if (doc.ig !== undefined) ids.push(doc.ig);
  return ids;
}

/** The header bytes of a document (inline, or its blob); empty bytes (undecodable) if unreadable. */
export function headerBytes(doc: InstanceDoc, blobs: Map<string, Uint8Array>): Uint8Array {
  if (doc.hg !== undefined) return blobs.get(doc.hg) ?? EMPTY_BYTES;
  try {
    return copyBytes(binaryBytes(doc.h));
  } catch {
    return EMPTY_BYTES; // decodes to a SerializationError naming the instance
  }
}

/**
 * The stored initial input of a document (inline, or its blob); undefined when none is stored
 * beside the header (a header written before the split may still carry it: fromStoredParts).
 */
export function initialInputBytes(doc: InstanceDoc, blobs: Map<string, Uint8Array>): Uint8Array | undefined {
  if (doc.ig !== undefined) return blobs.get(doc.ig);
  if (doc.i === undefined || doc.i === null) return undefined;
  try {
    return copyBytes(binaryBytes(doc.i));
  } catch {
    throw new SerializationError(`snapshot ${quote(doc._id)} has an initial input that is not bytes`);
  }
}

/**
 * The stored status of a document (undefined: no snapshot). Documents of older releases do not
 * store it: not finished is InProgress; finished is Completed or Failed, as the header says
 * (read again for this; an undecodable header gives a SerializationError).
 */
export async function storedStatus(
  ctx: MongoContext,
  doc: InstanceDoc | null,
): Promise<StoredStatus | undefined> {
  if (!isSnapshot(doc)) return undefined;
  if (doc.s !== undefined) return doc.s;
  if (doc.f !== true) return "InProgress";
  const full = await ctx.read(doc._id, { h: 1, hg: 1, d: 1 });
  if (!isSnapshot(full)) return undefined;
  const blobs = full.hg === undefined ? new Map<string, Uint8Array>() : await ctx.chunks.read([full.hg]);
  const header = headerBytes(full, blobs);
  const parts = {
    instanceId: doc._id,
    header,
    initialInput: undefined,
    results: [],
    lastCompletedTaskId: null,
  };
  return fromStoredParts(parts).state.kind;
}

/**
 * Saves a snapshot: read, judge (fence, finished and paused states, the event it consumes),
 * write the blobs, then one compare-and-set (or insert) that also removes the consumed event (or
 * every pending event, when the write ends the workflow). The blobs of the replaced version and
 * of removed events are collected after it lands; those of a write that did not land are
 * collected on the way out (see PendingBlobs).
 */
export async function saveSnapshot(
  ctx: MongoContext,
  snapshot: WorkflowSnapshot,
  fence: Fence | undefined,
  consume: EventRef | undefined,
): Promise<void> {
  const id = snapshot.instanceId;
  const plan = planSnapshot(snapshot);
  const payloadIds = plan.blobs.map((b) => b.id);
  /** The output blobs this call wrote, per task. */
  const ours = new Map<string, string>();
  const pending = new PendingBlobs();
  let payloadsWritten = plan.blobs.length === 0;
  try {
    await retryOnRace(
      `saveSnapshot: ${quote(id)}`,
      async () => {
        const doc = await ctx.read(id);
        const now = fence === undefined ? 0 : await ctx.now();
        const refusal = snapshotRefusal(id, fence, writeView(doc, fence, now), plan.status);
        if (refusal !== null) {
          // A refusal because the fence's claim expired is made durable first (see markLapsed).
          const lapsed = fence === undefined ? new Set<string>() : lapsedClaims(doc, [fence], [refusal], now);
          if (!(await markLapsed(ctx, id, doc, lapsed, now))) return RETRY;
          throw refusal;
        }
        const events = consumption(id, doc, consume, plan.finished);
        const { entries, missing } = resultEntries(plan.results, doc, ours);
        if (missing.length > 0 || !payloadsWritten) {
          // New blobs first: nothing refers to them until the instance document commits.
          const blobs = [...missing, ...(payloadsWritten ? [] : plan.blobs)];
          for (const m of missing) ours.set(m.taskId, m.id);
          payloadsWritten = true;
          await ctx.chunks.write(blobs.map((b) => ({ instanceId: id, id: b.id, bytes: b.bytes })));
          // Writing large outputs takes time: judge the fence again on a fresh read, so that the
          // claim is judged live within one round trip of the commit.
          if (fence !== undefined) return RETRY;
        }
        // The commit carries the claims of the version read (they stay), and fails if anything
        // (a claim, a release, a take-over, another write, an event) changed the document since.
        const c = hasExpiringClaims(doc) ? prunedClaims(doc, await ctx.now()) : undefined;
        const changes = { ...plan.fields, r: entries, ...(c === undefined ? {} : { c }) };
        const mine = new Set(ours.values());
        const referenced = [...entries.map((e) => e.g).filter((g) => mine.has(g)), ...payloadIds];
        const commit = () => ctx.commit(id, doc, changes, plan.remove, events.change);
        if (!(await pending.commit(referenced, commit))) return RETRY;
        if (isSnapshot(doc)) {
          const kept = new Set(entries.map((e) => e.g));
          const replaced = blobsOf(doc).filter((g) => !kept.has(g));
          await collectBlobs(ctx.chunks, [...replaced, ...events.garbage]);
        }
        return undefined;
      },
      RACE,
    );
  } finally {
    // Blobs no commit refers to, or may refer to (its reply was lost), are this call's garbage.
    await collectBlobs(
      ctx.chunks,
      pending.collectable([...ours.values(), ...(payloadsWritten ? payloadIds : [])]),
    );
  }
}

/**
 * Reads the instance document, then its blobs with one query. If a writer collected a blob in
 * between, reads again; the same version twice with a missing blob is damage, not a race.
 */
export async function loadSnapshot(ctx: MongoContext, instanceId: string): Promise<WorkflowSnapshot> {
  let previousVersion: string | undefined;
  return retryOnRace(
    `loadSnapshot: ${quote(instanceId)}`,
    async () => {
      const doc = await ctx.read(instanceId, PROJECTION.load);
      if (!isSnapshot(doc)) throw failures.snapshotNotFound(instanceId);
      const ids = blobsOf(doc);
      const blobs = await ctx.chunks.read(ids);
      if (ids.every((g) => blobs.has(g))) return joinSnapshot(doc, blobs);
      if (doc.v === previousVersion) {
        throw new SerializationError(
          `snapshot ${quote(instanceId)} refers to task outputs that are not stored`,
        );
      }
      previousVersion = doc.v;
      return RETRY;
    },
    { ...RACE, attempts: 50 },
  );
}

/** A stored snapshot document and its blobs, joined (fromStoredParts). */
function joinSnapshot(doc: InstanceDoc, blobs: Map<string, Uint8Array>): WorkflowSnapshot {
  const refs = Array.isArray(doc.r) ? doc.r : [];
  const attempts = storedAttempts(doc);
  return fromStoredParts({
    instanceId: doc._id,
    header: headerBytes(doc, blobs),
    initialInput: initialInputBytes(doc, blobs),
    results: refs.map((e) => ({ taskId: e.t, output: blobs.get(e.g) as Uint8Array })),
    lastCompletedTaskId: doc.l ?? null,
    ...(doc.u === undefined ? {} : { updatedAt: doc.u }),
    ...(attempts === undefined ? {} : { attempts }),
  });
}

export async function deleteSnapshot(ctx: MongoContext, instanceId: string): Promise<void> {
  // One conditional delete: only a stored snapshot (a claims-only placeholder is "no
  // snapshot"); its claims and pending events go with the document.
  const doc = await ctx.snapshots.findOneAndDelete(
    { _id: instanceId, d: { $exists: true } },
    { projection: PROJECTION.blobs },
  );
  if (doc === null) throw failures.snapshotNotFound(instanceId);
  // The delete has happened (the document was the commit point): a failure to collect the
  // blobs must not report it as failed (a retry would say NotFound). Left-over blobs belong to
  // no document; they can be swept (see the README).
  await collectBlobs(ctx.chunks, [...blobsOf(doc), ...eventBlobsOf(doc)]);
}

export async function listSnapshotsPage(
  ctx: MongoContext,
  cursor: string | null,
  limit: number,
): Promise<SnapshotPage> {
  const filter: Document = { d: { $exists: true } };
  if (cursor !== null) filter._id = { $gt: decodeCursor(cursor) };
  const docs = await ctx.snapshots
    .find(filter, { projection: PROJECTION.id })
    .sort({ _id: 1 })
    .limit(limit + 1)
    .toArray();
  const instanceIds = docs.slice(0, limit).map((d) => d._id);
  const last = instanceIds[instanceIds.length - 1];
  return { instanceIds, nextCursor: docs.length > limit && last !== undefined ? encodeCursor(last) : null };
}
