// Push wake-ups over a change stream: what the server is asked, what it sends, the wake of a
// waiter by another client's write, a stream cut on the server or ended, and the poll fallback
// ("off", a refusal). Cases that need change streams skip themselves on a server without them (a
// standalone MongoDB: there the first case checks the fallback and its reason instead).
import type { WakeReason } from "@sayiir/persistence-core";
import { claimOrFail, eventually, queued, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import { type ChangeStream, type Document, MongoClient } from "mongodb";
import { describe, expect, it, onTestFinished } from "vitest";
import { CHANGE_PIPELINE, wakeOf } from "../src/change-stream.js";
import { MongoBackend, type MongoBackendOptions } from "../src/index.js";
import { DATABASE, dropPrefix, type FaultSeam, faultSeam, freshPrefix, server } from "./subject.js";

/** A wait started this long ago has made its first look. */
const SETTLE_MS = 150;
/** A waiter woken by the stream is up well within this (the bound is 10 s). */
const PUSH_MS = 1_500;

interface Watched {
  backend: MongoBackend;
  /** A second backend (its own client) on the same collections: "another client". */
  other: MongoBackend;
  prefix: string;
  /** Every command the backend's client sent, with its reply once it came. */
  commands: Array<{ name: string; command: Document; reply?: Document }>;
  /** The cursor ids of the change streams the server opened for the backend, in order. */
  streamCursors: () => bigint[];
}

/** A migrated backend over a client whose commands are recorded, and another client's backend. */
async function watched(extra: Partial<MongoBackendOptions> = {}): Promise<Watched> {
  const url = server?.url ?? "";
  const prefix = freshPrefix();
  const client = new MongoClient(url, { monitorCommands: true });
  const commands: Watched["commands"] = [];
  const byId = new Map<number, Watched["commands"][number]>();
  client.on("commandStarted", (event) => {
    const entry = { name: event.commandName, command: event.command as Document };
    commands.push(entry);
    byId.set(event.requestId, entry);
  });
  client.on("commandSucceeded", (event) => {
    const entry = byId.get(event.requestId);
    if (entry !== undefined) entry.reply = event.reply as Document;
  });
  const options = { database: DATABASE, collectionPrefix: prefix, ...extra };
  const backend = new MongoBackend({ client, ...options });
  const other = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix });
  onTestFinished(async () => {
    await backend.close();
    await other.close();
    await dropPrefix(client, prefix);
    await client.close();
  });
  await backend.migrate();
  const streamCursors = (): bigint[] =>
    commands
      .filter((c) => c.name === "aggregate" && c.command.pipeline?.[0]?.$changeStream !== undefined)
      .flatMap((c) => (c.reply?.cursor?.id === undefined ? [] : [BigInt(String(c.reply.cursor.id))]));
  return { backend, other, prefix, commands, streamCursors };
}

/** Starts a wait, lets it settle (its first look done, the stream open), and times it from act(). */
function pending(backend: MongoBackend, queues: string[], timeoutMs = 20_000) {
  let actedAt = Number.NaN;
  const settled = backend
    .waitForTasks({ queues, timeoutMs })
    .then((reason): { reason: WakeReason; afterActionMs: number } => ({
      reason,
      afterActionMs: Date.now() - actedAt,
    }));
  return {
    settled,
    act: () => {
      actedAt = Date.now();
    },
  };
}

/** Skips the case unless the server runs change streams. */
async function needsPush(backend: MongoBackend, skip: (note: string) => void): Promise<void> {
  const { mode, reason } = await backend.wakeUpMode();
  if (mode !== "push") skip(`no change streams on this server: ${reason}`);
}

describe.skipIf(server === null)("MongoDB change streams", () => {
  it("migrate() asks the server once: change streams where it runs them ('push', re-probed every 10 s), else the poll and why", async () => {
    const { backend, commands } = await watched();
    const asked = commands.filter((c) => c.name === "aggregate" && c.command.pipeline?.[0]?.$changeStream);
    expect(asked).toHaveLength(1);
    const { mode, reason } = await backend.wakeUpMode();
    if (mode === "push") {
      expect(backend.capabilities).toMatchObject({ wakeUps: "push", wakeBoundMs: 10_000 });
      // The question's stream is closed again (killCursors of its cursor): nothing listens until a wait.
      const id = asked[0]?.reply?.cursor?.id;
      expect(
        commands.some((c) => c.name === "killCursors" && String(c.command.cursors?.[0]) === String(id)),
      ).toBe(true);
    } else {
      // Only a standalone MongoDB gets here (CI's standalone container): it refuses with 40573.
      expect(reason).toMatch(/40573/);
      expect(backend.capabilities).toMatchObject({ wakeUps: "poll", wakeBoundMs: 200 });
    }
    // Asked once: a second question is answered from memory.
    await backend.wakeUpMode();
    expect(commands.filter((c) => c.command.pipeline?.[0]?.$changeStream)).toHaveLength(1);
  });

  it("a write by another client wakes a waiter through the stream ('notified', no look), not a waiter of another queue; only index fields travel; close() kills the cursor", async (ctx) => {
    const { backend, other, commands, streamCursors } = await watched();
    await needsPush(backend, (note) => ctx.skip(note));
    const q = uid("q");
    const mine = pending(backend, [q]);
    const theirs = pending(backend, [uid("other")], 1_000);
    await eventually("the listener's stream", async () => (streamCursors().length === 2 ? true : undefined));
    await sleep(SETTLE_MS);
    const findsBefore = commands.filter((c) => c.name === "find").length;
    mine.act();
    theirs.act();
    await other.saveSnapshot(queued(uid(), q));
    const woken = await mine.settled;
    expect(woken.reason).toBe("notified");
    expect(woken.afterActionMs).toBeLessThan(PUSH_MS);
    // The change said "claimable now" (queue set, no claim): the waiter did not look again.
    expect(commands.filter((c) => c.name === "find").length).toBe(findsBefore);
    expect((await theirs.settled).reason).toBe("timeout");

    const stream = commands.find(
      (c) => c.name === "aggregate" && c.command.pipeline?.[0]?.$changeStream !== undefined,
    );
    // No document lookup: the server sends the change's own fields, cut by the projection.
    expect(stream?.command.pipeline[0].$changeStream.fullDocument).toBeUndefined();
    const changes = commands.flatMap((c) =>
      c.name === "getMore" ? ((c.reply?.cursor?.nextBatch ?? []) as Document[]) : [],
    );
    expect(changes.length).toBeGreaterThan(0);
    for (const change of changes) {
      expect(
        Object.keys(change).every((k) =>
          ["_id", "operationType", "fullDocument", "updateDescription"].includes(k),
        ),
      ).toBe(true);
      const fields = { ...change.fullDocument, ...change.updateDescription?.updatedFields };
      expect(Object.keys(fields).every((k) => ["qn", "qe", "tn", "ta", "te"].includes(k))).toBe(true);
    }
    const listening = streamCursors().at(-1);
    await backend.close();
    expect(
      commands.some((c) => c.name === "killCursors" && BigInt(String(c.command.cursors?.[0])) === listening),
    ).toBe(true);
  });

  it("an idle push waiter costs one look (on entry) and the stream's getMores: over 2 s no poll", async (ctx) => {
    const { backend, commands } = await watched();
    await needsPush(backend, (note) => ctx.skip(note));
    const from = commands.length;
    expect(await backend.waitForTasks({ queues: [uid("idle")], timeoutMs: 2_000 })).toBe("timeout");
    const sent = commands.slice(from);
    // One idle look: two finds (claimable now?) and three (the next due time).
    expect(sent.filter((c) => c.name === "find")).toHaveLength(5);
    // MongoDB waits up to 2 s per getMore; the stand-in answers at once and the listener paces
    // its getMores 10 ms doubling to 100 ms.
    expect(sent.filter((c) => c.name === "getMore").length).toBeLessThanOrEqual(2_000 / 100 + 5);
  });

  it("a stream cut on the server (its cursor killed) is resumed: a later write by another client still wakes a waiter", async (ctx) => {
    const { backend, other, streamCursors } = await watched();
    await needsPush(backend, (note) => ctx.skip(note));
    const q = uid("q");
    // A first wait starts the listener; a write ends it.
    const first = pending(backend, [q]);
    await eventually("the listener's stream", async () => (streamCursors().length === 2 ? true : undefined));
    await sleep(SETTLE_MS);
    first.act();
    await other.saveSnapshot(queued(uid(), q));
    expect((await first.settled).reason).toBe("notified");
    await other.claimAvailableTasks("w", 10, null, { queues: [q] });

    const listening = streamCursors()[1] as bigint;
    const admin = new MongoClient(server?.url ?? "");
    try {
      const killed = await admin
        .db(DATABASE)
        .command({ killCursors: `${backend.collections.snapshots}`, cursors: [listening] });
      expect(killed.cursorsKilled?.map(String)).toEqual([String(listening)]);
    } finally {
      await admin.close();
    }
    const later = pending(backend, [q]);
    await sleep(SETTLE_MS);
    later.act();
    await other.saveSnapshot(queued(uid(), q));
    const woken = await later.settled;
    expect(woken.reason).toBe("notified");
    expect(woken.afterActionMs).toBeLessThan(PUSH_MS);
    // The driver opened the stream again (from its resume token) after the killed cursor.
    expect(streamCursors().length).toBeGreaterThanOrEqual(3);
  });

  it("a stream that ends for good is replaced (after failed tries, with backoff): its waiters look again, and later writes wake them", async (ctx) => {
    const seam: FaultSeam = faultSeam();
    const streams: ChangeStream[] = [];
    let failNext = 0;
    seam.hook = (call, proceed) => {
      if (call.method !== "watch") return proceed();
      if (failNext > 0) {
        failNext--;
        throw new Error("injected: the stream cannot be opened");
      }
      const stream = proceed() as ChangeStream;
      streams.push(stream);
      return stream;
    };
    const { backend, other } = await watched({ faults: seam });
    await needsPush(backend, (note) => ctx.skip(note));
    const q = uid("q");
    const waiter = pending(backend, [q]);
    await eventually("the listener's stream", async () => (streams.length === 2 ? true : undefined));
    await sleep(SETTLE_MS);
    failNext = 2;
    // Ended from this side: the listener sees it closed, fails twice to open another, then does.
    await streams[1]?.close();
    await eventually("a fresh stream", async () =>
      streams.length === 3 && failNext === 0 ? true : undefined,
    );
    await sleep(SETTLE_MS);
    // The waiter looked again (notify(null)), found nothing, and waits on.
    waiter.act();
    await other.saveSnapshot(queued(uid(), q));
    const woken = await waiter.settled;
    expect(woken.reason).toBe("notified");
    expect(woken.afterActionMs).toBeLessThan(PUSH_MS);
  });

  it("a step to the next task of the same queue (the queue field unchanged) wakes a waiter of that queue", async (ctx) => {
    const { backend, other, streamCursors } = await watched();
    await needsPush(backend, (note) => ctx.skip(note));
    const q = uid("q");
    const id = uid();
    await other.saveSnapshot(queued(id, q));
    const claim = await claimOrFail(other, id, "t1", "w", 60_000);
    const waiter = pending(backend, [q]);
    await eventually("the listener's stream", async () => (streamCursors().length === 2 ? true : undefined));
    await sleep(SETTLE_MS);
    waiter.act();
    expect(
      await other.completeTasks([
        { claim, output: text("one"), next: { kind: "AtTask", taskId: "t2", queue: q } },
      ]),
    ).toEqual([null]);
    const woken = await waiter.settled;
    expect(woken.reason).toBe("notified");
    expect(woken.afterActionMs).toBeLessThan(PUSH_MS);
  });

  it('changeStreams "off": no $changeStream is ever sent, capabilities say poll (200 ms), and the poll finds another client\'s write', async () => {
    const { backend, other, commands } = await watched({ changeStreams: "off" });
    expect(await backend.wakeUpMode()).toEqual({ mode: "poll", reason: 'changeStreams: "off"' });
    expect(backend.capabilities).toMatchObject({ wakeUps: "poll", wakeBoundMs: 200 });
    const q = uid("q");
    const waiter = pending(backend, [q]);
    await sleep(SETTLE_MS);
    waiter.act();
    await other.saveSnapshot(queued(uid(), q));
    const woken = await waiter.settled;
    expect(woken.reason).toBe("ready");
    expect(woken.afterActionMs).toBeLessThan(200 + PUSH_MS);
    expect(commands.some((c) => c.command.pipeline?.[0]?.$changeStream !== undefined)).toBe(false);
  });

  it("a server that refuses $changeStream: the backend polls and says why (asked by the first wait when migrate() was not called)", async () => {
    const seam: FaultSeam = faultSeam();
    // The server refuses this pipeline as a standalone server refuses any change stream.
    seam.hook = (call, proceed) =>
      call.method === "watch" ? proceed([[{ $noSuchStage: {} }], ...call.args.slice(1)]) : proceed();
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const backend = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix, faults: seam });
    const other = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix });
    onTestFinished(async () => {
      await backend.close();
      await other.close();
      const client = new MongoClient(url);
      await dropPrefix(client, prefix).finally(() => client.close());
    });
    expect(backend.capabilities.wakeUps).toBe("poll");
    const q = uid("q");
    const waiter = pending(backend, [q]);
    await sleep(SETTLE_MS + 200);
    waiter.act();
    await other.saveSnapshot(queued(uid(), q));
    expect((await waiter.settled).reason).toBe("ready");
    const { mode, reason } = await backend.wakeUpMode();
    expect(mode).toBe("poll");
    expect(reason).toMatch(/refused \$changeStream \(code \d+\)/);
    expect(backend.capabilities).toMatchObject({ wakeUps: "poll", wakeBoundMs: 200 });
  });

  it("the server's filter keeps the changes that make a task ready or move a due time, in MongoDB's shape and the stand-in's, and wakeOf names their queues", async () => {
    const client = new MongoClient(server?.url ?? "");
    const prefix = freshPrefix();
    onTestFinished(async () => {
      await dropPrefix(client, prefix);
      await client.close();
    });
    const updated = (fields: Document) => ({
      operationType: "update",
      updateDescription: { updatedFields: fields, removedFields: [] },
    });
    // Change documents as MongoDB sends them (updateDescription) and as the stand-in does (an
    // update's fields in fullDocument), run through the pipeline's stages as a plain aggregate.
    const changes: Array<[string, Document, ReturnType<typeof wakeOf>]> = [
      [
        "insert ready",
        { operationType: "insert", fullDocument: { qn: "a", qe: null, h: "body" } },
        [{ queue: "a", readyNow: true }],
      ],
      [
        "insert due",
        { operationType: "insert", fullDocument: { tn: "b", ta: 5, te: null } },
        [{ queue: "b", readyNow: false }],
      ],
      ["insert held", { operationType: "insert", fullDocument: { d: "x", h: "body" } }, []],
      [
        "entered ready",
        updated({ qn: "a", qa: 1, qi: "00", qe: null, v: "1" }),
        [{ queue: "a", readyNow: true }],
      ],
      ["same queue, freed", updated({ qa: 2, qe: null, v: "2" }), [{ queue: null, readyNow: false }]],
      ["due time moved", updated({ ta: 9, v: "3" }), [{ queue: null, readyNow: false }]],
      ["timer freed", updated({ te: null, v: "4" }), [{ queue: null, readyNow: false }]],
      ["heartbeat", updated({ qe: 99, c: [], v: "5" }), []],
      ["claimed", updated({ te: 99, v: "6" }), []],
      ["delete", { operationType: "delete" }, []],
      [
        "stand-in update",
        { operationType: "update", fullDocument: { qn: "c", qe: 7, v: "7" } },
        [{ queue: "c", readyNow: false }],
      ],
      ["stand-in unset", { operationType: "update", fullDocument: { qn: "", tn: "", v: "8" } }, []],
    ];
    const scratch = client.db(DATABASE).collection<Document & { _id: string }>(`${prefix}changes`);
    await scratch.insertMany(
      changes.map(([name, change]) => ({ _id: name, ...change }) as Document & { _id: string }),
    );
    const kept = await scratch.aggregate(CHANGE_PIPELINE).toArray();
    const expectedKept = changes.filter(([, , wakes]) => wakes.length > 0).map(([name]) => name);
    // The stand-in's update has no update description: kept by the server, judged by wakeOf.
    expect(kept.map((c) => c._id).sort()).toEqual([...expectedKept, "stand-in unset"].sort());
    for (const change of kept) {
      expect(JSON.stringify(change)).not.toContain("body");
      const [, , wakes] = changes.find(([name]) => name === change._id) ?? [];
      expect(wakeOf(change)).toEqual(wakes);
    }
  });
});
