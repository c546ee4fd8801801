// completeTasks with `next` on MongoDB (one write per workflow step): what a step reads and
// writes, counted through the fault seam; its round trips per item and per batch; the races
// that matter here (cancel, pause, sendEvent, a claim-next takeover landing between the read
// and the compare-and-set); and saveSnapshot writing only the outputs that changed.
import { createHash } from "node:crypto";
import {
  ErrorCode,
  encodeSnapshotHeader,
  type NextStep,
  type PersistentBackend,
  type TaskClaim,
  type TaskCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  atTask,
  awaiting,
  claimOrFail,
  comparable,
  eventually,
  patternBytes,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import type { Collection, Document } from "mongodb";
import { describe, expect, it } from "vitest";
import type { DriverCall } from "../src/context.js";
import type { MongoBackend } from "../src/index.js";
import { PROJECTION } from "../src/layout.js";
import {
  beforeNextCommit,
  createSubject,
  DATABASE,
  type FaultSeam,
  faultSeam,
  type MongoSubject,
  server,
} from "./subject.js";

const MiB = 1024 * 1024;
const dec = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? undefined : new TextDecoder().decode(bytes);

function step(claim: TaskClaim, output: string, next: NextStep, extra: Partial<TaskCompletion> = {}) {
  return { claim, output: text(output), next, ...extra };
}

/** One driver call as recorded: the collection without its prefix, the method, the arguments. */
interface Recorded {
  on: string;
  method: string;
  args: readonly unknown[];
}

/** Records every driver call on the backend's collections (through the fault seam). */
function record(seam: FaultSeam, prefix: string): Recorded[] {
  const calls: Recorded[] = [];
  seam.hook = (call: DriverCall, proceed) => {
    calls.push({ on: call.collection.slice(prefix.length), method: call.method, args: call.args });
    return proceed();
  };
  return calls;
}

/** A snapshot with every output replaced by its SHA-256 (a cheap deep comparison of big outputs). */
function digestOf(snapshot: WorkflowSnapshot): unknown {
  const state = snapshot.state;
  if (state.kind !== "InProgress") return comparable(snapshot);
  const completedTasks = Object.fromEntries(
    Object.entries(state.completedTasks).map(([t, r]) => [
      t,
      createHash("sha256").update(r.output).digest("hex"),
    ]),
  );
  return {
    ...(comparable({ ...snapshot, state: { ...state, completedTasks: {} } }) as object),
    completedTasks,
  };
}

const summary = (calls: readonly Recorded[]) => calls.map((c) => `${c.on}.${c.method}`);

interface Env {
  subject: MongoSubject;
  backend: MongoBackend;
  other: PersistentBackend;
  seam: FaultSeam;
  col: (name: string) => Collection<Document>;
}

async function withEnv(body: (env: Env) => Promise<void>): Promise<void> {
  const seam = faultSeam();
  const subject = await createSubject({}, { faults: seam });
  const other = await subject.connect();
  const { MongoClient } = await import("mongodb");
  const admin = new MongoClient(server?.url ?? "");
  try {
    const db = admin.db(DATABASE);
    await body({
      subject,
      backend: subject.backend,
      other,
      seam,
      col: (name) => db.collection(subject.prefix + name),
    });
  } finally {
    seam.hook = null;
    await other.close();
    await subject.backend.close();
    await admin.close();
    await subject.cleanup?.();
  }
}

/** A workflow at t2, with t1's output (big by default) and t0's, and an initial input. */
function atT2(id: string, t1: Uint8Array = patternBytes(6 * MiB, 3)) {
  return atTask(id, "t2", { completed: { t0: text("zero"), t1 }, last: "t1", initialInput: text("in") });
}

const chunkIds = async (col: Env["col"], id: string) =>
  (await col("outputs").find({ s: id }).project({ _id: 1, g: 1 }).toArray())
    .map((d) => `${d.g}/${d._id}`)
    .sort();

const entries = async (col: Env["col"], id: string) =>
  ((await col("snapshots").findOne({ _id: id as never }))?.r ?? []) as Array<{ t: string; g: string }>;

describe.skipIf(server === null)("completeTasks with next (one write per step)", () => {
  it("a step reads the instance document only (no output, no initial input) and writes its own output only", async () => {
    await withEnv(async ({ backend, subject, seam, col }) => {
      const id = uid();
      await backend.saveSnapshot(atT2(id));
      const before = await chunkIds(col, id);
      const refs = await entries(col, id);
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const calls = record(seam, subject.prefix);
      expect(await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })])).toEqual([
        null,
      ]);
      expect(summary(calls).sort()).toEqual(["outputs.insertMany", "snapshots.find", "snapshots.updateOne"]);
      // The read: the instance document, without its initial input and event payloads.
      const find = calls.find((c) => c.method === "find");
      expect((find?.args[1] as { projection?: unknown } | undefined)?.projection).toEqual(PROJECTION.control);
      // The write: the new output's chunks only, then one compare-and-set of the document.
      const after = await entries(col, id);
      const t2 = after.find((e) => e.t === "t2")?.g;
      const inserted = (calls.find((c) => c.method === "insertMany")?.args[0] ?? []) as Document[];
      expect(inserted.map((d) => [d.s, d.g])).toEqual([[id, t2]]);
      // The other outputs: the same entries, the same chunk documents (never rewritten).
      expect(after.filter((e) => e.t !== "t2")).toEqual(refs);
      expect((await chunkIds(col, id)).filter((c) => !c.startsWith(`${t2}/`))).toEqual(before);
      const update = calls.find((c) => c.method === "updateOne")?.args[1] as { $set: Document };
      expect(Object.keys(update.$set)).not.toContain("i");
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state).toMatchObject({ kind: "InProgress", position: { kind: "AtTask", taskId: "t3" } });
      expect(dec(loaded.initialInput)).toBe("in");
    });
  }, 60_000);

  it("round trips: one find and one insertMany per batch, one compare-and-set per instance; a terminal batch adds one deleteMany", async () => {
    await withEnv(async ({ backend, subject, seam }) => {
      const ids = Array.from({ length: 4 }, () => uid());
      for (const id of ids) await backend.saveSnapshot(atT2(id, text("one")));
      const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t2", "worker-1")));
      let calls = record(seam, subject.prefix);
      const single = await backend.completeTasks([
        step(claims[0] as TaskClaim, "two", { kind: "AtTask", taskId: "t3" }),
      ]);
      expect(single).toEqual([null]);
      expect(summary(calls).sort()).toEqual(["outputs.insertMany", "snapshots.find", "snapshots.updateOne"]);
      calls = record(seam, subject.prefix);
      const batch = claims.slice(1).map((c) => step(c, "two", { kind: "AtTask", taskId: "t3" }));
      expect(await backend.completeTasks(batch)).toEqual([null, null, null]);
      const names = summary(calls);
      expect([...names].sort()).toEqual([
        "outputs.insertMany",
        "snapshots.find",
        "snapshots.updateOne",
        "snapshots.updateOne",
        "snapshots.updateOne",
      ]);
      // Two round trips: the read and the outputs together, then the commits together.
      expect(names.slice(0, 2).sort()).toEqual(["outputs.insertMany", "snapshots.find"]);
      const next = (await backend.claimAvailableTasks("worker-2", 10, 30_000)).filter((t) =>
        ids.includes(t.instanceId),
      );
      expect(next.map((t) => [t.taskId, dec(t.input)])).toEqual(ids.map(() => ["t3", "two"]));
      calls = record(seam, subject.prefix);
      const done = next.map((t) => step(t.claim, "three", { kind: "Completed", finalOutput: text("end") }));
      expect(await backend.completeTasks(done)).toEqual(ids.map(() => null));
      // Completed keeps no results: the step's output is not written, the old ones are collected
      // with one deleteMany.
      expect([...summary(calls)].sort()).toEqual([
        "outputs.deleteMany",
        "snapshots.find",
        ...ids.map(() => "snapshots.updateOne"),
      ]);
      for (const id of ids) expect((await backend.loadSnapshot(id)).state.kind).toBe("Completed");
    });
  });

  it("step vs cancel landing before the commit: ClaimLost, nothing recorded, the output collected", async () => {
    await withEnv(async ({ backend, other, subject, seam, col }) => {
      const id = uid();
      await backend.saveSnapshot(atT2(id, text("one")));
      const before = await chunkIds(col, id);
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, () =>
        other.cancelWorkflow(id, { reason: "stop" }),
      );
      const [outcome] = await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })]);
      expect(window.fired()).toBe(true);
      expect(outcome?.code).toBe(ErrorCode.ClaimLost);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state).toMatchObject({ kind: "Cancelled" });
      expect(await chunkIds(col, id)).toEqual(before);
    });
  });

  it("step vs pause landing before the commit: Conflict, nothing recorded, the claim kept; after resume the step lands", async () => {
    await withEnv(async ({ backend, other, subject, seam, col }) => {
      const id = uid();
      await backend.saveSnapshot(atT2(id, text("one")));
      const before = await chunkIds(col, id);
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, () => other.pauseWorkflow(id));
      const [outcome] = await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })]);
      expect(window.fired()).toBe(true);
      expect(outcome?.code).toBe(ErrorCode.Conflict);
      expect((await backend.loadSnapshot(id)).state).toMatchObject({
        kind: "Paused",
        position: { kind: "AtTask", taskId: "t2" },
      });
      expect(await chunkIds(col, id)).toEqual(before);
      expect(await other.claimTask(id, "t2", "worker-2", 30_000)).toBeNull();
      await other.resumeWorkflow(id);
      expect(await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })])).toEqual([
        null,
      ]);
      expect((await backend.loadSnapshot(id)).state).toMatchObject({
        position: { kind: "AtTask", taskId: "t3" },
      });
    });
  });

  it("step to a wait vs sendEvent of its name before the commit: the step lands on the new version and the wait is ready", async () => {
    await withEnv(async ({ backend, other, subject, seam }) => {
      const id = uid();
      await backend.saveSnapshot(atT2(id, text("one")));
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      let sequence = 0;
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
        sequence = await other.sendEvent(id, "approval", text("yes"));
      });
      const wait: NextStep = {
        kind: "AwaitingEvent",
        eventName: "approval",
        nextTaskId: "t3",
        timeoutAt: null,
      };
      expect(await backend.completeTasks([step(claim, "two", wait)])).toEqual([null]);
      expect(window.fired()).toBe(true);
      const found = (await backend.findAvailableTasks("w", 100)).filter((t) => t.instanceId === id);
      expect(found.map((t) => [t.taskId, t.event?.sequence, dec(t.input)])).toEqual([
        ["t3", sequence, "yes"],
      ]);
    });
  });

  it("step consuming an event vs sendEvent of the same name before the commit: the claimed one is consumed, the new one stays", async () => {
    await withEnv(async ({ backend, other, subject, seam }) => {
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "approval", "t3", { completed: { t1: text("one") } }));
      const first = await backend.sendEvent(id, "approval", text("a"));
      const [claimed] = (await backend.claimAvailableTasks("worker-1", 100, 30_000)).filter(
        (t) => t.instanceId === id,
      );
      expect(claimed?.event?.sequence).toBe(first);
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
        await other.sendEvent(id, "approval", text("b"));
      });
      const outcomes = await backend.completeTasks([
        step(
          (claimed as { claim: TaskClaim }).claim,
          "three",
          { kind: "AtTask", taskId: "t4" },
          {
            consumeEvent: claimed?.event,
          },
        ),
      ]);
      expect(window.fired()).toBe(true);
      expect(outcomes).toEqual([null]);
      expect((await backend.loadPendingEvents(id)).map((e) => dec(e.payload))).toEqual(["b"]);
      const found = (await backend.findAvailableTasks("w", 100)).filter((t) => t.instanceId === id);
      expect(found.map((t) => [t.taskId, dec(t.input)])).toEqual([["t4", "three"]]);
    });
  });

  it("step vs a claim-next takeover after expiry before the commit: the stale step is ClaimLost and writes nothing", async () => {
    await withEnv(async ({ backend, other, subject, seam, col }) => {
      const id = uid();
      await backend.saveSnapshot(atT2(id, text("one")));
      const before = await chunkIds(col, id);
      const stale = await claimOrFail(backend, id, "t2", "worker-1", 300);
      let takeover: TaskClaim | undefined;
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
        takeover = await eventually("the takeover", async () => {
          const got = (await other.claimAvailableTasks("worker-2", 10, 30_000)).find(
            (t) => t.instanceId === id,
          );
          return got?.claim;
        });
      });
      const [outcome] = await backend.completeTasks([step(stale, "stale", { kind: "AtTask", taskId: "t3" })]);
      expect(window.fired()).toBe(true);
      expect(outcome?.code).toBe(ErrorCode.ClaimLost);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state).toMatchObject({ position: { kind: "AtTask", taskId: "t2" } });
      expect(
        loaded.state.kind === "InProgress" ? Object.keys(loaded.state.completedTasks).sort() : [],
      ).toEqual(["t0", "t1"]);
      expect(await chunkIds(col, id)).toEqual(before);
      expect(
        await other.completeTasks([step(takeover as TaskClaim, "fresh", { kind: "AtTask", taskId: "t3" })]),
      ).toEqual([null]);
      expect(dec((await other.findAvailableTasks("w", 100)).find((t) => t.instanceId === id)?.input)).toBe(
        "fresh",
      );
    });
  });

  it("three clients step thirty workflows through three tasks at once: each task steps once, finished workflows leave no outputs", async () => {
    await withEnv(async ({ backend, subject, col }) => {
      const p = uid("many");
      const ids = Array.from({ length: 30 }, (_, i) => `${p}-${String(i).padStart(2, "0")}`);
      for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
      const clients = [backend, await subject.connect(), await subject.connect()];
      const stepped: string[] = [];
      const chain: Record<string, NextStep> = {
        t1: { kind: "AtTask", taskId: "t2" },
        t2: { kind: "AtTask", taskId: "t3" },
        t3: { kind: "Completed", finalOutput: text("done") },
      };
      try {
        await Promise.all(
          clients.map(async (client, n) => {
            for (let round = 0; round < 200 && stepped.length < ids.length * 3; round++) {
              const claimed = (await client.claimAvailableTasks(`w${n}`, 4, 30_000)).filter((t) =>
                t.instanceId.startsWith(p),
              );
              const outcomes = await client.completeTasks(
                claimed.map((t) => step(t.claim, `${dec(t.input)}>${t.taskId}`, chain[t.taskId] as NextStep)),
              );
              for (const [i, o] of outcomes.entries()) {
                expect(o).toBeNull();
                stepped.push(`${claimed[i]?.instanceId}/${claimed[i]?.taskId}`);
              }
            }
          }),
        );
      } finally {
        for (const client of clients.slice(1)) await client.close();
      }
      expect(stepped.sort()).toEqual(ids.flatMap((id) => ["t1", "t2", "t3"].map((t) => `${id}/${t}`)).sort());
      for (const id of ids) {
        const done = await backend.loadSnapshot(id);
        expect(done.state.kind).toBe("Completed");
      }
      expect(await col("outputs").countDocuments({ s: { $in: ids } })).toBe(0);
    });
  }, 60_000);

  it("a step to Completed with a final output over the inline budget stores the header as a blob; a step over an older header keeps its initial input", async () => {
    await withEnv(async ({ backend, col }) => {
      const id = uid();
      await backend.saveSnapshot(atT2(id, text("one")));
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const final = patternBytes(5 * MiB, 4);
      expect(
        await backend.completeTasks([step(claim, "two", { kind: "Completed", finalOutput: final })]),
      ).toEqual([null]);
      const doc = await col("snapshots").findOne({ _id: id as never });
      expect([typeof doc?.hg, doc?.h, doc?.r]).toEqual(["string", undefined, []]);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind === "Completed" && Buffer.from(loaded.state.finalOutput).equals(final)).toBe(
        true,
      );
      expect(dec(loaded.initialInput)).toBe("in");
      // Only the header's blob is left: the results went with the terminal step.
      expect((await col("outputs").distinct("g", { s: id })).sort()).toEqual([doc?.hg]);

      // A document written before the initial input was split out: the header carries it.
      const legacy = uid();
      const old = atTask(legacy, "t1", { initialInput: text("legacy") });
      await backend.saveSnapshot(atTask(legacy, "t1"));
      await col("snapshots").updateOne(
        { _id: legacy as never },
        { $set: { h: Buffer.from(encodeSnapshotHeader(old)) }, $unset: { i: "", ig: "" } },
      );
      const onLegacy = await claimOrFail(backend, legacy, "t1", "worker-1");
      expect(await backend.completeTasks([step(onLegacy, "one", { kind: "AtTask", taskId: "t2" })])).toEqual([
        null,
      ]);
      expect(dec((await backend.loadSnapshot(legacy)).initialInput)).toBe("legacy");
      expect((await col("snapshots").findOne({ _id: legacy as never }))?.i).toBeDefined();
    });
  }, 60_000);
});

describe.skipIf(server === null)("saveSnapshot writes only the outputs that changed", () => {
  it("unchanged outputs keep their blobs (a stored size and SHA-256 per result); changed and new ones are written, removed ones collected", async () => {
    await withEnv(async ({ backend, subject, seam, col }) => {
      const id = uid();
      const big = patternBytes(5 * MiB, 7);
      await backend.saveSnapshot(
        atTask(id, "t3", { completed: { t0: big, t1: text("one"), t2: text("two") } }),
      );
      const first = await entries(col, id);
      const g = (t: string, list = first) => list.find((e) => e.t === t)?.g;
      const bigChunks = (await chunkIds(col, id)).filter((c) => c.startsWith(`${g("t0")}/`));
      const calls = record(seam, subject.prefix);
      const next = atTask(id, "t4", { completed: { t0: big, t1: text("ONE"), t3: text("three") } });
      await backend.saveSnapshot(next);
      const second = await entries(col, id);
      expect(g("t0", second)).toBe(g("t0"));
      expect(g("t1", second)).not.toBe(g("t1"));
      const inserted = calls.filter((c) => c.method === "insertMany").flatMap((c) => c.args[0] as Document[]);
      expect(inserted.map((d) => d.g).sort()).toEqual([g("t1", second), g("t3", second)].sort());
      const deleted = calls
        .filter((c) => c.method === "deleteMany")
        .flatMap((c) => (c.args[0] as Document).g.$in);
      expect(deleted.sort()).toEqual([g("t1"), g("t2")].sort());
      expect((await chunkIds(col, id)).filter((c) => c.startsWith(`${g("t0")}/`))).toEqual(bigChunks);
      expect(digestOf(await backend.loadSnapshot(id))).toEqual(digestOf(next));

      // Nothing changed, fenced: no output call at all; the fence is judged on the version the commit replaces.
      const claim = await claimOrFail(backend, id, "t4", "worker-1");
      calls.length = 0;
      await backend.saveSnapshot(next, { claim });
      expect(summary(calls)).toEqual(["snapshots.findOne", "snapshots.updateOne"]);
      expect(await entries(col, id)).toEqual(second);

      // Entries of an older release (no size, no hash) are written again, with them.
      const bare = second.map(({ t, g: blob }) => ({ t, g: blob }));
      await col("snapshots").updateOne({ _id: id as never }, { $set: { r: bare } });
      calls.length = 0;
      await backend.saveSnapshot(next, { claim });
      expect(
        calls.filter((c) => c.method === "insertMany").flatMap((c) => c.args[0] as Document[]),
      ).toHaveLength(
        1 + 1 + 1, // t0 (one chunk of 5 MiB), t1, t3
      );
      const rewritten = await entries(col, id);
      expect(rewritten.every((e) => "z" in e && "x" in e)).toBe(true);
      expect(digestOf(await backend.loadSnapshot(id))).toEqual(digestOf(next));
    });
  }, 60_000);
});
