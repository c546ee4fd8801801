import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { claimOrFail, inProgress, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { createContext } from "../src/context.js";
import { verify } from "../src/discovery.js";
import { normalizeOptions } from "../src/options.js";
import { intercept, record } from "./faults.js";
import { freshBackend, rawHead } from "./helpers.js";
import { server } from "./subject.js";

// What the conformance kit cannot see of scheduling: the keys of the ready and timer indexes per
// queue and priority, older heads (no queue, priority or priority in the timer key), where
// attempts are stored, and what failTasks and discovery cost in requests.
const info = server();
const T0 = 1_800_000_000_000;
const AGING = 1_000;

const commands = (calls: Array<{ command: string }>) => calls.map((c) => c.command.replace("Command", ""));

function scheduled(id: string, schedule: { runAt?: number; priority?: number; queue?: string }) {
  return inProgress(id, { updatedAt: T0, position: { kind: "AtTask", taskId: "t1", ...schedule } });
}

describe.skipIf(info === null)("scheduling on DynamoDB", () => {
  it("keys: the ready partition of the queue by readyAt + (priority - 3) x agingMs; a future runAt in the timer index of the queue", async () => {
    let now = T0 + 10_000;
    const backend = await freshBackend({ clock: () => now, agingMs: AGING });
    const { layout } = backend;
    const ready = uid("r");
    const later = uid("l");
    await backend.saveSnapshot(scheduled(ready, { runAt: T0, priority: 5, queue: "gpu" }));
    await backend.saveSnapshot(scheduled(later, { runAt: T0 + 20_000, priority: 1, queue: "gpu" }));
    const r = await rawHead(backend, ready);
    expect([r.GPK?.S, r.GSK?.S, r.TPK, r.q?.S, r.pri?.N, r.rat?.N]).toEqual([
      layout.readyPk(layout.shardOf(ready), "gpu"),
      layout.readySk(T0, 5, ready),
      undefined,
      "gpu",
      "5",
      String(T0),
    ]);
    expect(layout.readySk(T0, 5, ready).slice(0, 16)).toBe(String(T0 + 2 * AGING).padStart(16, "0"));
    const l = await rawHead(backend, later);
    expect([l.GPK, l.TPK?.S, l.TSK?.S]).toEqual([
      undefined,
      layout.timerPk(layout.shardOf(later), "gpu"),
      layout.timerSk(T0 + 20_000, 1, later),
    ]);
    expect(layout.readyPk(0)).toBe(`${layout.base}Q#0`); // "default": the partition of older heads
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    expect((await backend.findAvailableTasks("w", 10, { queues: ["gpu"] })).map((t) => t.instanceId)).toEqual(
      [ready],
    );
    now = T0 + 20_000;
    // Due: merged with key T0 + 20,000 - 2 x agingMs, after the priority-5 task's T0 + 2 x agingMs.
    expect((await backend.findAvailableTasks("w", 10, { queues: ["gpu"] })).map((t) => t.instanceId)).toEqual(
      [ready, later],
    );
  });

  it("an older head (no queue or priority attributes, a timer key without priority) is served as default / 3", async () => {
    const now = T0;
    const backend = await freshBackend({ clock: () => now });
    const id = uid("old");
    const wait = inProgress(id, {
      updatedAt: T0 - 5,
      position: { kind: "AwaitingEvent", eventName: "e", nextTaskId: "t2", timeoutAt: T0 - 1 },
    });
    await backend.saveSnapshot(wait);
    // Rewrite the timer key as issue 15 wrote it: due + "#" + id.
    await backend.client.send(
      new UpdateItemCommand({
        TableName: backend.tableName,
        Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: "H" } },
        UpdateExpression: "SET TSK = :sk",
        ExpressionAttributeValues: { ":sk": { S: backend.layout.timeSk(T0 - 1, id) } },
      }),
    );
    expect(await backend.findAvailableTasks("w", 10)).toMatchObject([
      { instanceId: id, taskId: "t2", timedOut: true, priority: 3, queue: "default", attempt: 1 },
    ]);
  });

  it("failTasks: 3 requests per failure (head and claim read, one transaction); attempts live on the head", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now });
    const id = uid();
    await backend.saveSnapshot(scheduled(id, {}));
    const claim = await claimOrFail(backend, id, "t1", "w1", 60_000);
    const calls = record(backend.client);
    expect(await backend.failTasks([{ claim, error: "boom", retryAt: T0 + 1_000 }])).toEqual([null]);
    expect(commands(calls).sort()).toEqual(["GetItem", "GetItem", "TransactWriteItems"]);
    const head = await rawHead(backend, id);
    expect(JSON.parse(head.att?.S ?? "[]")).toEqual([
      { taskId: "t1", count: 1, lastError: "boom", lastFailedAt: T0, retryAt: T0 + 1_000 },
    ]);
    expect([head.GPK, head.TSK?.S]).toEqual([undefined, backend.layout.timerSk(T0 + 1_000, 3, id)]);
    // A result of another task keeps them; a save replaces them with the snapshot's own.
    await backend.saveTaskResult(id, "side", text("x"));
    expect((await backend.loadSnapshot(id)).attempts?.t1?.count).toBe(1);
    now = T0 + 1_000;
    expect(await backend.findAvailableTasks("w", 10)).toMatchObject([{ instanceId: id, attempt: 2 }]);
    await backend.saveSnapshot(scheduled(id, {}));
    expect((await backend.loadSnapshot(id)).attempts).toBeUndefined();
    expect((await rawHead(backend, id)).att).toBeUndefined();
  });

  it("discovery reads only the partitions of the queues served: 3 Queries per queue and shard, then one BatchGetItem", async () => {
    const now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 1 });
    const other = uid("busy");
    for (let i = 0; i < 20; i++) await backend.saveSnapshot(scheduled(`${other}-${i}`, { queue: "busy" }));
    const id = uid("mine");
    await backend.saveSnapshot(scheduled(id, {}));
    const calls = record(backend.client);
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([id]);
    const busy = backend.layout.readyPk(0, "busy");
    expect(JSON.stringify(calls)).not.toContain(busy);
    // ready, timer and leased partitions of "default" (1 shard), the head + claim batch, the input.
    expect(commands(calls).sort()).toEqual(["BatchGetItem", "Query", "Query", "Query"]);
    calls.length = 0;
    await backend.findAvailableTasks("w", 10, { queues: ["default", "busy"] });
    expect(commands(calls).filter((c) => c === "Query")).toHaveLength(6);
  });

  it("a task with a future runAt completed anyway (claimTask) leaves the timer index with its result", async () => {
    const now = T0;
    const backend = await freshBackend({ clock: () => now });
    const id = uid();
    await backend.saveSnapshot(scheduled(id, { runAt: T0 + 60_000 }));
    expect((await rawHead(backend, id)).TSK?.S).toBe(backend.layout.timerSk(T0 + 60_000, 3, id));
    const claim = await claimOrFail(backend, id, "t1", "w1", 60_000);
    expect(await backend.completeTasks([{ claim, output: text("done") }])).toEqual([null]);
    const head = await rawHead(backend, id);
    expect([head.GPK, head.TPK, head.TSK]).toEqual([undefined, undefined, undefined]);
  });
  it("a failed task after a wait keeps its retryAt (or hold) through sendEvent, resume and a lease's end", async () => {
    let now = T0 + 10_000;
    const backend = await freshBackend({ clock: () => now, agingMs: AGING });
    const queues = { queues: ["bulk", "default"] };
    const wait = (id: string) =>
      inProgress(id, {
        updatedAt: T0,
        position: {
          kind: "AwaitingEvent",
          eventName: "go",
          nextTaskId: "t2",
          timeoutAt: T0,
          queue: "bulk",
          priority: 2,
        },
      });
    const retried = uid("r");
    const held = uid("h");
    const leased = uid("l");
    for (const id of [retried, held, leased]) await backend.saveSnapshot(wait(id));
    const claimed = await backend.claimAvailableTasks("w1", 10, 60_000, queues);
    expect(claimed.map((t) => t.instanceId).sort()).toEqual([held, leased, retried].sort());
    const claimOf = (id: string) =>
      claimed.find((t) => t.instanceId === id)?.claim as NonNullable<(typeof claimed)[0]["claim"]>;
    const retryAt = T0 + 1_000_000;
    expect(
      await backend.failTasks([
        { claim: claimOf(retried), error: "boom", retryAt },
        { claim: claimOf(held), error: "boom", retryAt: null },
      ]),
    ).toEqual([null, null]);
    for (const id of [retried, held]) await backend.sendEvent(id, "go", text("payload"));
    expect(await backend.claimAvailableTasks("w2", 10, 60_000, queues)).toEqual([]);
    expect(await backend.findAvailableTasks("w2", 10, queues)).toEqual([]);
    // Paused and resumed: still held, still due at retryAt only.
    await backend.pauseWorkflow(retried);
    await backend.resumeWorkflow(retried);
    expect(await backend.findAvailableTasks("w2", 10, queues)).toEqual([]);
    // The lease of the third ends (its claim released) after a save that gave its task a retryAt.
    await backend.sendEvent(leased, "go", text("payload"));
    await backend.releaseTaskClaim(leased, "t2", "w1");
    expect((await backend.findAvailableTasks("w2", 10, queues)).map((t) => t.instanceId)).toEqual([leased]);
    const raw = await rawHead(backend, retried);
    expect([raw.GPK, raw.TSK?.S]).toEqual([undefined, backend.layout.timerSk(retryAt, 2, retried)]);
    now = retryAt;
    const due = await backend.findAvailableTasks("w2", 10, queues);
    expect(due.map((t) => [t.instanceId, t.attempt, t.event?.eventName, t.timedOut])).toEqual([
      [leased, 1, "go", undefined],
      [retried, 2, "go", undefined],
    ]);
    expect((await rawHead(backend, held)).TPK).toBeUndefined();
  });
  it("due timers merge by discovery key across pages: a priority-1 timer beyond a shard's first page wins over 150 priority-5", async () => {
    let now = T0 - 60_000;
    const backend = await freshBackend({ clock: () => now, agingMs: AGING, readyShards: 8 });
    const run = uid("p");
    const low = Array.from({ length: 150 }, (_, i) => `${run}-5-${String(i).padStart(3, "0")}`);
    for (let i = 0; i < low.length; i += 25) {
      await Promise.all(
        low
          .slice(i, i + 25)
          .map((id, j) => backend.saveSnapshot(scheduled(id, { runAt: T0 + i + j, priority: 5 }))),
      );
    }
    // Due after every priority-5 timer of its shard (so past the first page of 10), yet its key
    // (due - 2 x agingMs) is the smallest of all.
    const urgent = `${run}-1`;
    await backend.saveSnapshot(scheduled(urgent, { runAt: T0 + 150, priority: 1 }));
    now = T0 + 10_000;
    const shard = backend.layout.shardOf(urgent);
    expect(low.filter((id) => backend.layout.shardOf(id) === shard).length).toBeGreaterThan(10);
    expect((await backend.findAvailableTasks("w", 1)).map((t) => [t.instanceId, t.priority])).toEqual([
      [urgent, 1],
    ]);
    const calls = record(backend.client);
    const claimed = await backend.claimAvailableTasks("w", 1, 30_000);
    expect(claimed.map((t) => t.instanceId)).toEqual([urgent]);
    // The cost: a timer partition is read on while an unread entry could still overtake its head;
    // here every timer is due within 2 x agingMs of the others, so each partition is read to its
    // end (pages of 10: entries / 10 + 1 Queries), beside one Query per ready and leased partition.
    const perShard = Array.from({ length: 8 }, (_, s) =>
      [...low, urgent].filter((id) => backend.layout.shardOf(id) === s),
    );
    const timerPages = perShard.reduce((n, ids) => n + Math.floor(ids.length / 10) + 1, 0);
    expect(commands(calls).filter((c) => c === "Query")).toHaveLength(8 + 8 + timerPages);
  });
  it("verify rejects a head whose queue is not served (a lagging ready-index entry of the queue it left)", async () => {
    const now = T0;
    const backend = await freshBackend({ clock: () => now, agingMs: AGING });
    const ctx = createContext(
      backend.client,
      backend.layout,
      normalizeOptions({ tableName: backend.tableName, clock: () => now, agingMs: AGING }),
    );
    const id = uid("moved");
    await backend.saveSnapshot(scheduled(id, { queue: "b" }));
    await backend.saveSnapshot(scheduled(id, { queue: "a" })); // the instance moves from b to a
    // The entry b's partition may still show (the GSI is eventually consistent; Local never lags).
    const lagging = {
      pk: backend.layout.instancePk(id),
      instanceId: id,
      taskId: "t1",
      time: backend.layout.discoveryKey(T0, 3),
      source: "ready" as const,
    };
    expect(await verify(ctx, [lagging], ["b"])).toEqual([]);
    expect((await verify(ctx, [lagging], ["a", "b"])).map((v) => v.head.queue)).toEqual(["a"]);
    expect((await backend.claimAvailableTasks("w", 1, 30_000, { queues: ["b"] })).length).toBe(0);
  });

  it("claim-next that read the head before another worker's failTasks claims nothing (no early run, no stale attempt)", async () => {
    // Worker B verifies the task (attempts: none); before its claim lands, worker A claims the
    // task, fails it with a retryAt a minute away. B's claim must not land: the task is held
    // until then, and B would report attempt 1 for the second run.
    const keyPrefix = uid("race");
    const a = await freshBackend({ keyPrefix });
    const b = await freshBackend({ keyPrefix });
    const id = uid();
    await a.saveSnapshot(scheduled(id, {}));
    let raced = false;
    intercept(b.client, "initialize", async (call, send) => {
      if (!raced && call.command === "TransactWriteItemsCommand") {
        raced = true;
        const claim = await claimOrFail(a, id, "t1", "worker-a", 60_000);
        expect(await a.failTasks([{ claim, error: "boom", retryAt: Date.now() + 60_000 }])).toEqual([null]);
      }
      return send();
    });
    expect(await b.claimAvailableTasks("worker-b", 1, 60_000)).toEqual([]);
    expect(raced).toBe(true);
    expect((await a.loadSnapshot(id)).attempts?.t1).toMatchObject({ count: 1, lastError: "boom" });
    expect(await b.findAvailableTasks("worker-b", 10)).toEqual([]);
  });
});
