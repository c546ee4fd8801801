// Workflow control and events in the instance document: the event records (inline or blobs, the
// per-instance counter), the timer index fields, the merged discovery order, revoked claims,
// older documents, and races through the fault seam. The semantics are the conformance kit's
// (control and events groups); these cases look at what the kit cannot see.
import {
  ErrorCode,
  encodeSnapshotHeader,
  markCancelled,
  markTaskCompleted,
  type PersistentBackend,
  updatePosition,
} from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import {
  atTask,
  awaiting,
  claimOrFail,
  comparable,
  expectCode,
  finished,
  patternBytes,
  rejection,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import type { Collection, Document, MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { binaryBytes } from "../src/chunks.js";
import { EVENT_INLINE_BYTES, EVENTS_INLINE_TOTAL, orderKey } from "../src/layout.js";
import {
  beforeNextCommit,
  connectForSuite,
  createSubject,
  DATABASE,
  type FaultSeam,
  faultSeam,
  server,
} from "./subject.js";

const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

describe.skipIf(server === null)("control and events in the instance document", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });

  type Col = (name: string) => Collection<Document>;

  async function withSubject(
    body: (backend: PersistentBackend, col: Col, seam: FaultSeam, prefix: string) => Promise<void>,
  ): Promise<void> {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    try {
      await body(
        subject.backend,
        (name) => client.db(DATABASE).collection(subject.prefix + name),
        seam,
        subject.prefix,
      );
    } finally {
      seam.hook = null;
      await subject.backend.close();
      await subject.cleanup?.();
    }
  }

  const docOf = (col: Col, id: string, projection?: Document) =>
    col("snapshots").findOne({ _id: id as never }, projection === undefined ? {} : { projection });

  it("event records: small payloads inline, large ones as blobs, sequences from the instance's counter; consuming removes one, a terminal write all", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const wait = awaiting(id, "e", "t1");
      await backend.saveSnapshot(wait);
      const big = patternBytes(EVENT_INLINE_BYTES + 1, 3);
      expect(await backend.sendEvent(id, "e", text("small"))).toBe(1);
      expect(await backend.sendEvent(id, "other", big)).toBe(2);
      const doc = await docOf(col, id);
      expect(doc?.es).toBe(2);
      const events = doc?.e as Document[];
      expect(events.map((e) => Object.keys(e).sort())).toEqual([
        ["a", "b", "n", "q", "z"],
        ["a", "g", "n", "q", "z"],
      ]);
      expect(events.map((e) => [e.q, e.n, e.z])).toEqual([
        [1, "e", 5],
        [2, "other", big.byteLength],
      ]);
      expect(decode(binaryBytes(events[0]?.b))).toBe("small");
      const blob = events[1]?.g as string;
      expect(await col("outputs").countDocuments({ g: blob, s: id })).toBe(1);
      const pending = await backend.loadPendingEvents(id);
      expect(Buffer.compare(pending[1]?.payload ?? new Uint8Array(), big)).toBe(0);

      // The write past the wait consumes the inline event: its record goes, the counter stays.
      const [task] = await backend.claimAvailableTasks("w", 1, 60_000);
      expect(task?.event).toEqual({ eventName: "e", sequence: 1 });
      const next = updatePosition(markTaskCompleted(wait, "t1", text("r")), { kind: "AtTask", taskId: "t2" });
      await backend.saveSnapshot(next, { claim: task?.claim, consumeEvent: task?.event });
      const after = await docOf(col, id);
      expect(((after?.e ?? []) as Document[]).map((e) => e.q)).toEqual([2]);
      expect(after?.es).toBe(2);
      expect(await backend.sendEvent(id, "e", text("third"))).toBe(3);

      // A terminal write drops every pending event and collects the blobs of the large ones.
      await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("done") }));
      expect((await docOf(col, id))?.e).toBeUndefined();
      expect(await col("outputs").countDocuments({ g: blob })).toBe(0);
      expect(await backend.loadPendingEvents(id)).toEqual([]);
    });
  });

  it("event names are only ever values: dots and dollars never reach a field name or an operator", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const names = ["a.b", "$where", "$gt", "x.$y", "__proto__"];
      await backend.saveSnapshot(awaiting(id, "$gt", "t1"));
      for (const name of names) await backend.sendEvent(id, name, text(name));
      expect((await backend.loadPendingEvents(id)).map((e) => [e.eventName, decode(e.payload)])).toEqual(
        names.map((n) => [n, n]),
      );
      const [task] = await backend.claimAvailableTasks("w", 1, 60_000);
      expect(task?.event).toEqual({ eventName: "$gt", sequence: 3 });
      const next = updatePosition(markTaskCompleted(awaiting(id, "$gt", "t1"), "t1", text("r")), {
        kind: "AwaitingEvent",
        eventName: "a.b",
        nextTaskId: "t2",
        timeoutAt: null,
      });
      await backend.saveSnapshot(next, { claim: task?.claim, consumeEvent: task?.event });
      const doc = await docOf(col, id, { w: 1, "e.n": 1 });
      expect(doc?.w).toEqual({ n: "a.b", t: "t2", o: null });
      expect(((doc?.e ?? []) as Document[]).map((e) => e.n)).toEqual(["a.b", "$where", "x.$y", "__proto__"]);
      expect((await backend.findAvailableTasks("w2", 10)).map((t) => t.event)).toEqual([
        { eventName: "a.b", sequence: 1 },
      ]);
    });
  });

  it("inline payloads stay within their budget per instance; beyond it events are blobs, all in order", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "e", "t1"));
      const fit = EVENTS_INLINE_TOTAL / EVENT_INLINE_BYTES;
      const payloads = Array.from({ length: fit + 2 }, (_, i) => patternBytes(EVENT_INLINE_BYTES, i + 1));
      for (const payload of payloads) await backend.sendEvent(id, "e", payload);
      const events = (await docOf(col, id, { "e.q": 1, "e.g": 1 }))?.e as Document[];
      expect(events.filter((e) => e.g === undefined).map((e) => e.q)).toEqual(
        Array.from({ length: fit }, (_, i) => i + 1),
      );
      expect(events.filter((e) => e.g !== undefined).map((e) => e.q)).toEqual([fit + 1, fit + 2]);
      const loaded = await backend.loadPendingEvents(id);
      expect(loaded.map((e) => e.sequence)).toEqual(payloads.map((_, i) => i + 1));
      loaded.forEach((e, i) => {
        expect(Buffer.compare(e.payload, payloads[i] as Uint8Array)).toBe(0);
      });
    });
  });

  it("deleteSnapshot collects the blobs of pending events; cancel collects them too", async () => {
    await withSubject(async (backend, col) => {
      for (const end of ["delete", "cancel"] as const) {
        const id = uid();
        await backend.saveSnapshot(awaiting(id, "e", "t1"));
        await backend.sendEvent(id, "e", patternBytes(EVENT_INLINE_BYTES * 2, 5));
        expect(await col("outputs").countDocuments({ s: id })).toBe(1);
        if (end === "delete") await backend.deleteSnapshot(id);
        else await backend.cancelWorkflow(id);
        expect(await col("outputs").countDocuments({ s: id })).toBe(0);
      }
    });
  });

  it("the timer fields: a wait with a timeout and no event is in the timer index; an event moves it to the ready index; pause and cancel take it out", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const keys = { qa: 1, qi: 1, qe: 1, ta: 1, ti: 1, te: 1 };
      const doc = () => docOf(col, id, keys);
      await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: 5_000 }));
      expect(await doc()).toEqual({ _id: id, ta: 5_000, ti: orderKey(id), te: null });
      const claim = await claimOrFail(backend, id, "t1", "w", 60_000);
      expect(await doc()).toEqual({ _id: id, ta: 5_000, ti: orderKey(id), te: claim.expiresAt });
      await backend.releaseTaskClaim(id, "t1", "w");
      await backend.claimTask(id, "t1", "w", null); // a claim without ttl takes it out
      expect(await doc()).toEqual({ _id: id });
      await backend.releaseTaskClaim(id, "t1", "w");
      await backend.pauseWorkflow(id);
      expect(await doc()).toEqual({ _id: id });
      await backend.resumeWorkflow(id);
      expect(await doc()).toEqual({ _id: id, ta: 5_000, ti: orderKey(id), te: null });
      await backend.sendEvent(id, "other", text("x"));
      expect((await doc())?.ta).toBe(5_000);
      await backend.sendEvent(id, "e", text("go"));
      const ready = await doc();
      expect(ready).toEqual({ _id: id, qa: ready?.qa, qi: orderKey(id), qe: null });
      expect(typeof ready?.qa).toBe("number");
      await backend.cancelWorkflow(id);
      expect(await doc()).toEqual({ _id: id });
      // A wait without a timeout is in neither index until its event comes.
      const never = uid();
      await backend.saveSnapshot(awaiting(never, "e", "t1"));
      expect(await docOf(col, never, keys)).toEqual({ _id: never });
    });
  });

  it("discovery merges the ready index (by updatedAt) and the timer index (by timeoutAt), ties by instance id", async () => {
    await withSubject(async (backend) => {
      const T = 1_000_000;
      const base = uid("order");
      const id = (name: string) => `${base}-${name}`;
      // Ties at T + 10 (a timer's id first) and at T + 20 (a ready task's id first).
      await backend.saveSnapshot(atTask(id("c-ready"), "t", { updatedAt: T + 10 }));
      await backend.saveSnapshot(awaiting(id("a-timer"), "e", "t", { timeoutAt: T + 10, updatedAt: T + 2 }));
      await backend.saveSnapshot(atTask(id("g-ready"), "t", { updatedAt: T + 20 }));
      await backend.saveSnapshot(awaiting(id("h-timer"), "e", "t", { timeoutAt: T + 20, updatedAt: T + 3 }));
      await backend.saveSnapshot(awaiting(id("b"), "e", "t", { timeoutAt: T + 5, updatedAt: T + 1 }));
      await backend.saveSnapshot(atTask(id("d"), "t", { updatedAt: T }));
      await backend.saveSnapshot(awaiting(id("e"), "e", "t", { timeoutAt: Date.now() + 60_000 }));
      await backend.saveSnapshot(awaiting(id("f"), "e", "t", { updatedAt: T + 7 }));
      await backend.sendEvent(id("f"), "e", text("f"));
      const order = ["d", "b", "f", "a-timer", "c-ready", "g-ready", "h-timer"].map(id);
      const found = await backend.findAvailableTasks("w", 100);
      expect(found.map((t) => t.instanceId)).toEqual(order);
      expect(found.map((t) => t.timedOut === true)).toEqual([false, true, false, true, false, false, true]);
      expect(found.map((t) => t.event?.eventName)).toEqual([
        undefined,
        undefined,
        "e",
        undefined,
        undefined,
        undefined,
        undefined,
      ]);
      // Claim-next serves the same order, one call at a time (each claim leaves both indexes' walk).
      const claimed: string[] = [];
      for (let i = 0; i < order.length + 1; i++) {
        claimed.push(...(await backend.claimAvailableTasks("w", 1, 60_000)).map((t) => t.instanceId));
      }
      expect(claimed).toEqual(order);
    });
  });

  it("a timer-ready task that is claimed is not handed out again while its claim lives; it is after the claim expires", async () => {
    await withSubject(async (backend) => {
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: 1_000 }));
      const [first] = await backend.claimAvailableTasks("w1", 10, 300);
      expect(first).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
      expect(first?.input.byteLength).toBe(0);
      expect(await backend.findAvailableTasks("w2", 10)).toEqual([]);
      expect(await backend.claimAvailableTasks("w2", 10, 60_000)).toEqual([]);
      await sleep(450);
      const [again] = await backend.claimAvailableTasks("w2", 10, 60_000);
      expect(again).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
      expect(again?.claim.token).toBeGreaterThan(first?.claim.token ?? Number.POSITIVE_INFINITY);
    });
  });

  it("cancel revokes claims in the document: entries and tokens kept, expiry the epoch, the revocation's moment in x", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const running = await claimOrFail(backend, id, "t1", "w1", 60_000);
      const forever = await claimOrFail(backend, id, "side", "w2", null);
      const before = Date.now();
      await backend.cancelWorkflow(id);
      const claims = (await docOf(col, id, { c: 1 }))?.c as Document[];
      expect(claims.map((c) => [c.t, c.k, c.e])).toEqual([
        ["t1", running.token, REVOKED_EXPIRY],
        ["side", forever.token, REVOKED_EXPIRY],
      ]);
      for (const c of claims) {
        expect(c.x).toBeGreaterThanOrEqual(before - 2_000);
        expect(c.x).toBeLessThanOrEqual(Date.now() + 2_000);
      }
      // The former holder may still release it.
      await backend.releaseTaskClaim(id, "side", "w2");
      const left = ((await docOf(col, id, { c: 1 }))?.c ?? []) as Document[];
      expect(left.map((c) => c.t)).toEqual(["t1"]);
    });
  });

  it("a document of an older release: a header that carries the initial input keeps it through pause and resume; a finished one without a status is refused with its own", async () => {
    await withSubject(async (backend, col) => {
      const legacy = uid();
      const snapshot = atTask(legacy, "t1", { initialInput: text("legacy") });
      await backend.saveSnapshot(atTask(legacy, "t1"));
      await col("snapshots").updateOne(
        { _id: legacy as never },
        { $set: { h: Buffer.from(encodeSnapshotHeader(snapshot)) }, $unset: { i: "", ig: "", s: "" } },
      );
      await backend.pauseWorkflow(legacy, { reason: "upgrade" });
      const paused = await backend.loadSnapshot(legacy);
      expect(paused.state.kind).toBe("Paused");
      expect(decode(paused.initialInput ?? new Uint8Array())).toBe("legacy");
      expect(decode(binaryBytes((await docOf(col, legacy, { i: 1 }))?.i))).toBe("legacy");
      await backend.resumeWorkflow(legacy);
      const resumed = await backend.loadSnapshot(legacy);
      expect(resumed.state.kind).toBe("InProgress");
      expect(comparable(resumed)).toEqual(comparable({ ...snapshot, updatedAt: resumed.updatedAt }));
      const [task] = await backend.findAvailableTasks("w", 10);
      expect(decode(task?.input ?? new Uint8Array())).toBe("legacy");

      const failed = uid();
      await backend.saveSnapshot(finished(failed, { kind: "Failed", error: "boom" }));
      await col("snapshots").updateOne({ _id: failed as never }, { $unset: { s: "" } });
      const refused = await rejection(backend.sendEvent(failed, "e", text("x")));
      expect(refused).toMatchObject({ code: ErrorCode.Conflict });
      expect((refused as Error).message).toContain("is Failed");
      await expectCode(backend.pauseWorkflow(failed), ErrorCode.Conflict);
      expect(((await rejection(backend.cancelWorkflow(failed))) as Error).message).toContain("is Failed");
    });
  });

  it("races: a cancel whose commit loses to a sendEvent drops that event too; an event that lands before a wait is saved makes it ready", async () => {
    await withSubject(async (backend, col, seam, prefix) => {
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "e", "t1"));
      const race = beforeNextCommit(seam, `${prefix}snapshots`, async () => {
        seam.hook = null;
        await backend.sendEvent(id, "e", patternBytes(EVENT_INLINE_BYTES * 2, 9));
      });
      await backend.cancelWorkflow(id);
      expect(race.fired()).toBe(true);
      expect(await backend.loadPendingEvents(id)).toEqual([]);
      expect(await col("outputs").countDocuments({ s: id })).toBe(0);

      const other = uid();
      await backend.saveSnapshot(atTask(other, "t0"));
      const racing = beforeNextCommit(seam, `${prefix}snapshots`, async () => {
        seam.hook = null;
        await backend.saveSnapshot(awaiting(other, "e", "t1"));
      });
      const sequence = await backend.sendEvent(other, "e", text("go"));
      expect(racing.fired()).toBe(true);
      const found = (await backend.findAvailableTasks("w", 10)).find((t) => t.instanceId === other);
      expect(found).toMatchObject({ taskId: "t1", event: { eventName: "e", sequence } });
    });
  });

  it("a cancel is final and the heartbeat reads it, each judged on the version its compare-and-set replaces", async () => {
    await withSubject(async (backend, col, seam, prefix) => {
      const snapshots = `${prefix}snapshots`;
      const late = finished(uid(), { kind: "Completed", finalOutput: text("late") });
      const claimsOf = async (id: string) => ((await docOf(col, id, { c: 1 }))?.c ?? []) as Document[];

      // A Cancelled snapshot (saveSnapshot revokes nothing) lands between a fenced Completed
      // write's read and its commit: the fence still holds, the commit misses, the re-read refuses.
      const id = uid();
      const running = atTask(id, "t1", { completed: { t0: text("zero") } });
      await backend.saveSnapshot(running);
      const claim = await claimOrFail(backend, id, "t1", "w1", 60_000);
      const race = beforeNextCommit(seam, snapshots, async () => {
        await backend.saveSnapshot(markCancelled(running, { reason: "stop" }));
      });
      const refused = await rejection(backend.saveSnapshot({ ...late, instanceId: id }, { claim }));
      expect(race.fired()).toBe(true);
      expect(refused).toMatchObject({ code: ErrorCode.Conflict });
      expect((refused as Error).message).toContain("only a Cancelled snapshot may be written");
      expect((await backend.loadSnapshot(id)).state).toMatchObject({ kind: "Cancelled", reason: "stop" });

      // The same race against a heartbeat: the renewal misses, the re-read sees Cancelled, and
      // the claim is left as it was (not renewed, not revoked).
      const renewed = await rejection(backend.extendTaskClaim(id, "t1", "w1", 120_000));
      expect(renewed).toMatchObject({ code: ErrorCode.ClaimLost });
      const other = uid();
      const waiting = atTask(other, "t1");
      await backend.saveSnapshot(waiting);
      const held = await claimOrFail(backend, other, "t1", "w2", 60_000);
      const raced = beforeNextCommit(seam, snapshots, async () => {
        await backend.saveSnapshot(markCancelled(waiting));
      });
      const lost = await rejection(backend.extendTaskClaim(other, "t1", "w2", 120_000));
      expect(raced.fired()).toBe(true);
      expect(lost).toMatchObject({ code: ErrorCode.ClaimLost });
      expect((lost as Error).message).toContain("is revoked");
      expect((await claimsOf(other)).map((c) => [c.k, c.e, c.x])).toEqual([
        [held.token, held.expiresAt, undefined],
      ]);

      // cancelWorkflow racing a fenced write revokes its claim: the fence is judged first (ClaimLost).
      const third = uid();
      await backend.saveSnapshot(atTask(third, "t1"));
      const fence = await claimOrFail(backend, third, "t1", "w3", 60_000);
      const cancelling = beforeNextCommit(seam, snapshots, async () => {
        await backend.cancelWorkflow(third);
      });
      await expectCode(
        backend.saveSnapshot({ ...late, instanceId: third }, { claim: fence }),
        ErrorCode.ClaimLost,
      );
      expect(cancelling.fired()).toBe(true);
      expect((await backend.loadSnapshot(third)).state.kind).toBe("Cancelled");
      expect((await claimsOf(third)).map((c) => [c.k, c.e])).toEqual([[fence.token, REVOKED_EXPIRY]]);
    });
  });
});
