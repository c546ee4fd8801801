/*
 * Events: sendEvent, loadPendingEvents, and how a write consumes or drops them. Pending events
 * live in the `e` array of their instance's document (small payloads inline, larger ones as
 * blobs in the outputs collection, written before the commit like outputs), with the counter
 * `es` giving each its sequence; so sending, consuming and dropping are each part of one
 * compare-and-set of that document, and readiness (ready or timer index) is recomputed in it.
 */
import { copyBytes, failures, type PendingEvent, SerializationError } from "@sayiir/persistence-core";
import { controlRefusal, RETRY, retryOnRace } from "@sayiir/persistence-core/adapter";
import { binaryBytes, newBlobId } from "./chunks.js";
import { type MongoContext, quote, RACE } from "./context.js";
import { eventBlobsOf } from "./instance.js";
import {
  EVENT_INLINE_BYTES,
  EVENTS_INLINE_TOTAL,
  type EventEntry,
  type InstanceDoc,
  isSnapshot,
  PROJECTION,
} from "./layout.js";
import { collectBlobs } from "./maintenance.js";
import { PendingBlobs } from "./pending-blobs.js";
import { storedStatus } from "./snapshots.js";

/** Bytes of the inline payloads of a document's pending events. */
const inlineBytes = (doc: Pick<InstanceDoc, "e">): number =>
  (doc.e ?? []).reduce((sum, event) => sum + (event.g === undefined ? Number(event.z) : 0), 0);

/** The payload of a pending event: inline (the document read in full), or its blob; undefined if absent. */
export function eventPayload(event: EventEntry, blobs: Map<string, Uint8Array>): Uint8Array | undefined {
  if (event.g !== undefined) return blobs.get(event.g);
  if (event.b === undefined) return undefined;
  return copyBytes(binaryBytes(event.b));
}

/**
 * sendEvent: read, judge (controlRefusal), and one compare-and-set that appends the event with
 * the next sequence of the instance's counter and the backend's clock as sentAt (and makes a
 * wait for that name ready). A payload over the inline budget is written first as a blob, under
 * PendingBlobs' rules, like an output.
 */
export async function sendEvent(
  ctx: MongoContext,
  instanceId: string,
  eventName: string,
  payload: Uint8Array,
): Promise<number> {
  const blobId = newBlobId();
  const pending = new PendingBlobs();
  let written = false;
  try {
    return await retryOnRace(
      `sendEvent: ${quote(instanceId)}`,
      async () => {
        const doc = await ctx.read(instanceId);
        const refusal = controlRefusal("sendEvent", instanceId, await storedStatus(ctx, doc));
        if (refusal !== null) throw refusal;
        const current = doc as InstanceDoc;
        const inline =
          !written &&
          payload.byteLength <= EVENT_INLINE_BYTES &&
          inlineBytes(current) + payload.byteLength <= EVENTS_INLINE_TOTAL;
        if (!inline && !written) {
          await ctx.chunks.write([{ instanceId, id: blobId, bytes: payload }]);
          written = true;
        }
        const sequence = Number(current.es ?? 0) + 1;
        const entry: EventEntry = { q: sequence, n: eventName, a: await ctx.now(), z: payload.byteLength };
        if (inline) entry.b = payload;
        else entry.g = blobId;
        const commit = () => ctx.commit(instanceId, current, { es: sequence }, [], { push: entry });
        return (await pending.commit(inline ? [] : [blobId], commit)) ? sequence : RETRY;
      },
      RACE,
    );
  } finally {
    if (written) await collectBlobs(ctx.chunks, pending.collectable([blobId]));
  }
}

/**
 * loadPendingEvents: the document's events (oldest first) and the blobs of the large ones. If a
 * writer consumed one and collected its blob in between, reads again; the same version twice
 * with a missing blob is damage, not a race.
 */
export async function loadPendingEvents(ctx: MongoContext, instanceId: string): Promise<PendingEvent[]> {
  let previousVersion: string | undefined;
  return retryOnRace(
    `loadPendingEvents: ${quote(instanceId)}`,
    async () => {
      const doc = await ctx.read(instanceId, PROJECTION.events);
      if (!isSnapshot(doc)) throw failures.snapshotNotFound(instanceId);
      const events = [...(doc.e ?? [])].sort((a, b) => a.q - b.q);
      const blobs = await ctx.chunks.read(eventBlobsOf(doc));
      const loaded: PendingEvent[] = [];
      for (const event of events) {
        const payload = eventPayload(event, blobs);
        if (payload === undefined) break;
        loaded.push({ eventName: event.n, sequence: Number(event.q), payload, sentAt: Number(event.a) });
      }
      if (loaded.length === events.length) return loaded;
      if (doc.v === previousVersion) {
        throw new SerializationError(`events of ${quote(instanceId)} refer to payloads that are not stored`);
      }
      previousVersion = doc.v;
      return RETRY;
    },
    { ...RACE, attempts: 50 },
  );
}
