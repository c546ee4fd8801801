// Discovery and claim-next when a step fails part-way: a candidate that cannot be run, a driver
// call that fails after claims were taken, a give-back that fails, a blob sweep that fails after
// a delete. Failures are injected through the backend's testing-only fault seam (option
// `faults`), which sees every driver call on the backend's collections.
import { ErrorCode, PersistenceError } from "@sayiir/persistence-core";
import { atTask, expectCode, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { MongoClient } from "mongodb";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MongoBackend } from "../src/index.js";
import { DATABASE, dropPrefix, faultSeam, freshPrefix, server } from "./subject.js";

const T0 = 1_700_000_000_000;

/** Decides, per driver call on a collection, whether to fail it ("injected failure"). */
type Fault = (collection: string, method: string, args: readonly unknown[]) => boolean;

describe.skipIf(server === null)("partial failures of discovery and claim-next", () => {
  const url = server?.url ?? "";
  let raw: MongoClient;
  const fault: { current: Fault | null } = { current: null };
  /** The seam fails the calls `fault.current` picks; everything else is the real call. */
  const seam = faultSeam();
  seam.hook = (call, proceed) => {
    if (fault.current?.(call.collection, call.method, call.args) === true) {
      throw new Error(`injected failure: ${call.collection}.${call.method}`);
    }
    return proceed();
  };
  let prefix: string;
  let backend: MongoBackend;

  beforeAll(async () => {
    raw = new MongoClient(url);
    await raw.connect();
  });
  afterAll(async () => {
    await raw?.close();
  });

  async function open(): Promise<MongoBackend> {
    fault.current = null;
    prefix = freshPrefix();
    backend = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix, faults: seam });
    await backend.migrate();
    return backend;
  }
  afterEach(async () => {
    fault.current = null;
    await backend?.close();
    await dropPrefix(raw, prefix);
  });

  const snapshots = () => raw.db(DATABASE).collection<{ _id: string; c?: unknown[] }>(`${prefix}snapshots`);
  /** What the conformance kit's corruptSnapshot does: an undecodable inline header. */
  const corrupt = async (id: string) => {
    await snapshots().updateOne(
      { _id: id },
      { $set: { h: Buffer.from("not a snapshot") }, $unset: { hg: "" } },
    );
  };
  /** Fails the n-th and later calls of `method` on the collection named `suffix`. */
  const failFrom = (
    suffix: string,
    method: string,
    nth: number,
    also?: (args: readonly unknown[]) => boolean,
  ) => {
    let calls = 0;
    return (collection: string, m: string, args: readonly unknown[]) => {
      if (collection !== prefix + suffix || m !== method || (also !== undefined && !also(args))) return false;
      calls += 1;
      return calls >= nth;
    };
  };
  const isInputRead = (args: readonly unknown[]) => {
    const filter = args[0] as { _id?: { $in?: unknown } } | undefined;
    return filter?._id?.$in !== undefined;
  };

  it("a candidate whose input cannot be read (corrupt oldest snapshot) does not block the next ready task", async () => {
    const b = await open();
    const bad = uid("bad");
    const good = uid("good");
    const later = uid("later");
    await b.saveSnapshot(atTask(bad, "t1", { updatedAt: T0 }));
    await b.saveSnapshot(atTask(good, "t1", { updatedAt: T0 + 1 }));
    await b.saveSnapshot(atTask(later, "t1", { updatedAt: T0 + 2 }));
    await corrupt(bad);
    for (let limit = 1; limit <= 3; limit++) {
      const found = (await b.findAvailableTasks("w", limit)).map((t) => t.instanceId);
      expect(found, `limit ${limit}`).toEqual([good, later].slice(0, limit));
    }
    const claimed = await b.claimAvailableTasks("w", 1, null);
    expect(claimed.map((t) => t.instanceId)).toEqual([good]);
    // The corrupt one was claimed and given back: no claim left on it.
    expect((await snapshots().findOne({ _id: bad }))?.c).toEqual([]);
    expect((await b.findAvailableTasks("w", 5)).map((t) => t.instanceId)).toEqual([later]);
  });

  it("claim-next that fails before returning anything gives back every claim it took, then rejects", async () => {
    const b = await open();
    const ids = [uid("a"), uid("b"), uid("c")];
    for (const [i, id] of ids.entries()) await b.saveSnapshot(atTask(id, "t1", { updatedAt: T0 + i }));
    // Reading the inputs of the three claims just won fails.
    fault.current = failFrom("snapshots", "find", 1, isInputRead);
    const error = await rejection(b.claimAvailableTasks("w", 3, null));
    expect(error).toBeInstanceOf(PersistenceError);
    expect((error as PersistenceError).code).toBe(ErrorCode.Backend);
    fault.current = null;
    // No claim without ttl was left behind: all three are ready again.
    expect((await b.findAvailableTasks("w2", 10)).map((t) => t.instanceId)).toEqual(ids);
    for (const id of ids) expect((await snapshots().findOne({ _id: id }))?.c).toEqual([]);
    expect((await b.claimAvailableTasks("w2", 3, null)).map((t) => t.instanceId)).toEqual(ids);
  });

  it("claim-next that fails after taking claims returns them instead of rejecting (and gives back the rest)", async () => {
    const b = await open();
    const bad = uid("bad");
    const ids = [uid("a"), uid("b"), uid("c")];
    await b.saveSnapshot(atTask(bad, "t1", { updatedAt: T0 }));
    for (const [i, id] of ids.entries()) await b.saveSnapshot(atTask(id, "t1", { updatedAt: T0 + 1 + i }));
    await corrupt(bad);
    // First batch: bad, a, b (bad is given back); the token reservation of the second batch fails.
    fault.current = failFrom("meta", "findOneAndUpdate", 2);
    const claimed = await b.claimAvailableTasks("w", 3, null);
    fault.current = null;
    expect(claimed.map((t) => t.instanceId)).toEqual(ids.slice(0, 2));
    expect(claimed.map((t) => t.claim.expiresAt)).toEqual([null, null]);
    expect(claimed.map((t) => Array.from(t.input))).toEqual([[], []]);
    expect((await snapshots().findOne({ _id: bad }))?.c).toEqual([]);
    // The returned claims are the live ones: fenced writes land.
    for (const task of claimed) {
      await b.saveTaskResult(task.instanceId, task.taskId, text("done"), { claim: task.claim });
    }
    expect((await b.findAvailableTasks("w2", 10)).map((t) => t.instanceId)).toEqual([ids[2]]);
  });

  it("claim-next reports a claim without ttl it could not give back, naming it, instead of dropping it silently", async () => {
    const b = await open();
    const bad = uid("bad");
    await b.saveSnapshot(atTask(bad, "t1", { updatedAt: T0 }));
    await corrupt(bad);
    // The give-back reads the document with findOne: make every such read fail.
    fault.current = failFrom("snapshots", "findOne", 1);
    const error = await rejection(b.claimAvailableTasks("w", 1, null));
    fault.current = null;
    expect((error as PersistenceError).code).toBe(ErrorCode.Backend);
    expect((error as Error).message).toContain(JSON.stringify(bad));
    expect((error as Error).message).toContain("releaseTaskClaim");
    // The named claim is the worker's, and releasing it works.
    await b.releaseTaskClaim(bad, "t1", "w");
    expect((await snapshots().findOne({ _id: bad }))?.c).toEqual([]);
  });

  it("deleteSnapshot succeeds when sweeping the outputs fails after the document is gone", async () => {
    const b = await open();
    const id = uid();
    await b.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
    fault.current = failFrom("outputs", "deleteMany", 1);
    await b.deleteSnapshot(id);
    fault.current = null;
    await expectCode(b.loadSnapshot(id), ErrorCode.NotFound);
    await expectCode(b.deleteSnapshot(id), ErrorCode.NotFound);
  });
});
