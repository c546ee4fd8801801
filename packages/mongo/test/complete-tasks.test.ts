// completeTasks on MongoDB: the completions of one instance are ONE compare-and-set of its
// document (whatever their number), outputs are stored before it, and a lost race re-judges
// every completion of that instance on the new version.
import { ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, claimOrFail, comparable, eventually, text, uid } from "@sayiir/persistence-core/conformance";
import { type Document, MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { MongoBackend } from "../src/index.js";
import {
  beforeNextCommit,
  connectForSuite,
  createSubject,
  DATABASE,
  dropPrefix,
  faultSeam,
  freshPrefix,
  server,
} from "./subject.js";

describe.skipIf(server === null)("completeTasks", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });

  it("one update per instance, one insert of outputs and one find for the whole batch", async () => {
    const prefix = freshPrefix();
    const watched = new MongoClient(server?.url ?? "", { monitorCommands: true });
    const commands: Array<{ name: string; collection: unknown; updates: number }> = [];
    watched.on("commandStarted", (event) => {
      const command = event.command as Document;
      commands.push({
        name: event.commandName,
        collection: command[event.commandName],
        updates: Array.isArray(command.updates) ? command.updates.length : 0,
      });
    });
    const backend = new MongoBackend({ client: watched, database: DATABASE, collectionPrefix: prefix });
    try {
      await backend.migrate();
      const busy = uid();
      const others = [uid(), uid()];
      await backend.saveSnapshot(atTask(busy, "a"));
      for (const id of others) await backend.saveSnapshot(atTask(id, "t1"));
      const tasks = ["a", "b", "c", "d", "e", "f"];
      const claims = [
        ...(await Promise.all(tasks.map((t) => claimOrFail(backend, busy, t, `worker-${t}`, 60_000)))),
        ...(await Promise.all(others.map((id) => claimOrFail(backend, id, "t1", "worker-t1", 60_000)))),
      ];
      const before = await client
        .db(DATABASE)
        .collection<{ _id: string; v: string }>(`${prefix}snapshots`)
        .findOne({ _id: busy });
      commands.length = 0;
      const outcomes = await backend.completeTasks(
        claims.map((claim) => ({ claim, output: text(`${claim.instanceId}/${claim.taskId}`) })),
      );
      expect(outcomes).toEqual(claims.map(() => null));
      const snapshots = commands.filter((c) => c.collection === `${prefix}snapshots`);
      const outputs = commands.filter((c) => c.collection === `${prefix}outputs`);
      // Three instances: three compare-and-sets, however many tasks each one completes.
      expect(snapshots.filter((c) => c.name === "update").map((c) => c.updates)).toEqual([1, 1, 1]);
      expect(snapshots.filter((c) => c.name === "find")).toHaveLength(1);
      expect(outputs.map((c) => c.name)).toEqual(["insert"]);

      // The six completions of `busy` landed together: one new version, every claim gone.
      const after = await client
        .db(DATABASE)
        .collection<{ _id: string; v: string; c?: unknown[]; r?: unknown[] }>(`${prefix}snapshots`)
        .findOne({ _id: busy });
      expect(after?.v).not.toBe(before?.v);
      expect(after?.c).toEqual([]);
      expect(after?.r).toHaveLength(tasks.length);
      const loaded = await backend.loadSnapshot(busy);
      if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
      expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(tasks);
      expect(loaded.state.lastCompletedTaskId).toBe("f");
    } finally {
      await backend.close();
      await watched.close();
      await dropPrefix(client, prefix);
    }
  });

  it("a compare-and-set lost to a concurrent write is retried on the new version: every completion lands, that write too", async () => {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    const other = await subject.connect();
    const backend = subject.backend;
    try {
      const id = uid();
      await backend.saveSnapshot(atTask(id, "a"));
      const claims = await Promise.all(
        ["a", "b", "c"].map((t) => claimOrFail(backend, id, t, `worker-${t}`, 60_000)),
      );
      let concurrent: TaskClaim | null = null;
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
        // Another client claims a fourth task of the same instance: the version changes.
        concurrent = await other.claimTask(id, "z", "worker-z", 60_000);
      });
      const outcomes = await backend.completeTasks(
        claims.map((claim) => ({ claim, output: text(claim.taskId) })),
      );
      expect(window.fired()).toBe(true);
      expect(outcomes).toEqual([null, null, null]);
      const loaded = await backend.loadSnapshot(id);
      if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
      expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(["a", "b", "c"]);
      // The concurrent claim survived our commit: it is live and still fences its own write.
      expect(concurrent).not.toBeNull();
      expect(await other.claimTask(id, "z", "probe", 60_000)).toBeNull();
      expect(
        await other.completeTasks([{ claim: concurrent as unknown as TaskClaim, output: text("z") }]),
      ).toEqual([null]);
    } finally {
      await other.close();
      await backend.close();
      await subject.cleanup?.();
    }
  });

  it("a takeover between the fence check and the commit refuses that completion only; its output is collected", async () => {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    const other = await subject.connect();
    const backend = subject.backend;
    try {
      const id = uid();
      await backend.saveSnapshot(atTask(id, "a"));
      const stale = await claimOrFail(backend, id, "a", "worker-a", 300);
      const good = await claimOrFail(backend, id, "b", "worker-b", 60_000);
      let takeover: TaskClaim | undefined;
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
        // Our completions were judged (both live); now "a" runs out and another worker takes it.
        takeover = await eventually(
          "takeover",
          async () => (await other.claimTask(id, "a", "new-worker", 60_000)) ?? undefined,
        );
      });
      const outcomes = await backend.completeTasks([
        { claim: stale, output: text("stale") },
        { claim: good, output: text("good") },
      ]);
      expect(window.fired()).toBe(true);
      expect(outcomes[0]).toMatchObject({ code: ErrorCode.ClaimLost });
      expect(outcomes[1]).toBeNull();
      const loaded = await backend.loadSnapshot(id);
      if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
      expect(Object.keys(loaded.state.completedTasks)).toEqual(["b"]);
      // Only the committed output is stored: the refused one was collected.
      const outputs = client.db(DATABASE).collection(`${subject.prefix}outputs`);
      expect(await outputs.countDocuments({ s: id })).toBe(1);
      // The new holder's claim is intact.
      expect(await other.completeTasks([{ claim: takeover as TaskClaim, output: text("fresh") }])).toEqual([
        null,
      ]);
    } finally {
      await other.close();
      await backend.close();
      await subject.cleanup?.();
    }
  });

  it("refused completions (missing, finished, stale) leave no outputs and no change behind", async () => {
    const subject = await createSubject();
    const backend = subject.backend;
    try {
      const missing = uid();
      const live = uid();
      await backend.saveSnapshot(atTask(live, "t1"));
      const onMissing = await claimOrFail(backend, missing, "t1", "worker-t1", 60_000);
      const claim = await claimOrFail(backend, live, "t1", "worker-t1", 60_000);
      const original = comparable(await backend.loadSnapshot(live));
      const outcomes = await backend.completeTasks([
        { claim: onMissing, output: text("x") },
        { claim: { ...claim, token: claim.token + 1 }, output: text("y") },
      ]);
      expect(outcomes.map((o) => o?.code)).toEqual([ErrorCode.NotFound, ErrorCode.ClaimLost]);
      expect(comparable(await backend.loadSnapshot(live))).toEqual(original);
      expect(await client.db(DATABASE).collection(`${subject.prefix}outputs`).countDocuments({})).toBe(0);
    } finally {
      await backend.close();
      await subject.cleanup?.();
    }
  });
});
