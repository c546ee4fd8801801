import { atTask, awaiting, claimOrFail, inProgress, text } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { InMemoryBackend, MemoryStore } from "../src/index.js";

// What the scheduling group cannot see: which index (ready or due) and which (queue, priority)
// list a task sits in, and what discovery reads.

function manualClock(start = 1_000_000, agingMs?: number) {
  const clock = { now: start };
  const backend = new InMemoryBackend({ store: new MemoryStore(() => clock.now), agingMs });
  return { clock, backend, store: backend.store };
}

/** Where an instance is indexed: "ready:task@readyAt", "due:task@dueAt" or "none". */
function indexOf(store: MemoryStore, id: string): string {
  const ready = store.ready.get(id);
  const due = store.due.get(id);
  if (ready !== undefined && due !== undefined) throw new Error(`${id} is in both indexes`);
  if (ready !== undefined) return `ready:${ready.taskId}@${ready.at}`;
  return due === undefined ? "none" : `due:${due.taskId}@${due.at}`;
}

describe("memory: the ready index and the due index", () => {
  it("runAt and retryAt go in the due index (the later of the two); retryAt null holds the task", async () => {
    const { clock, backend, store } = manualClock();
    const sleep = inProgress("s", {
      updatedAt: 10,
      position: { kind: "AtTask", taskId: "t1", runAt: 2_000_000 },
    });
    await backend.saveSnapshot(sleep);
    expect(indexOf(store, "s")).toBe("due:t1@2000000");
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    clock.now = 2_000_000;
    const [task] = await backend.claimAvailableTasks("w", 10, 60_000);
    if (task === undefined) throw new Error("not due");
    expect(task).toMatchObject({ instanceId: "s", attempt: 1 });
    // A retry earlier than runAt still waits for runAt; a later one moves the task to it.
    expect(await backend.failTasks([{ claim: task.claim, error: "e1", retryAt: 1_500_000 }])).toEqual([null]);
    expect(indexOf(store, "s")).toBe("due:t1@2000000");
    const again = await claimOrFail(backend, "s", "t1", "w", 60_000);
    expect(await backend.failTasks([{ claim: again, error: "e2", retryAt: 3_000_000 }])).toEqual([null]);
    expect(indexOf(store, "s")).toBe("due:t1@3000000");
    expect(store.instances.get("s")?.attempts.get("t1")).toEqual({
      count: 2,
      lastError: "e2",
      lastFailedAt: 2_000_000,
      retryAt: 3_000_000,
    });
    // Not rescheduled: held, in no index, until a save changes the position or the attempts.
    const held = await claimOrFail(backend, "s", "t1", "w", 60_000);
    await backend.failTasks([{ claim: held, error: "fatal", retryAt: null }]);
    expect(indexOf(store, "s")).toBe("none");
    await backend.saveSnapshot(atTask("s", "t2", { updatedAt: 20, completed: { t1: text("x") } }));
    expect(indexOf(store, "s")).toBe("ready:t2@20");
  });

  it("a wait's retry waits for its retryAt even with its event pending; the event stays its input", async () => {
    const { clock, backend, store } = manualClock();
    await backend.saveSnapshot(awaiting("w", "go", "t1", { updatedAt: 10 }));
    await backend.sendEvent("w", "go", text("payload"));
    const [task] = await backend.claimAvailableTasks("worker", 1, 60_000);
    if (task === undefined) throw new Error("not ready");
    await backend.failTasks([{ claim: task.claim, error: "e", retryAt: 1_000_500 }]);
    expect(indexOf(store, "w")).toBe("due:t1@1000500");
    clock.now = 1_000_500;
    const [retry] = await backend.findAvailableTasks("worker", 1);
    expect(retry).toMatchObject({ taskId: "t1", attempt: 2, event: task.event, input: text("payload") });
  });

  it("each queue has its own lists: discovery never reads another queue's", async () => {
    const { backend, store } = manualClock();
    for (let i = 0; i < 50; i++) {
      const id = `gpu-${i}`;
      await backend.saveSnapshot(
        inProgress(id, { position: { kind: "AtTask", taskId: "t", queue: "gpu", priority: 1 + (i % 5) } }),
      );
    }
    expect(store.ready.lists(["default"])).toEqual([]);
    expect(store.ready.lists(["gpu"]).length).toBe(5);
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    expect(await backend.findAvailableTasks("w", 100, { queues: ["gpu"] })).toHaveLength(50);
    // Moving on empties the queue's lists, and the queue goes with them.
    for (let i = 0; i < 50; i++) await backend.deleteSnapshot(`gpu-${i}`);
    expect(store.ready.lists(["gpu"])).toEqual([]);
  });

  it("the index keeps readyAt; the key uses the reading backend's agingMs, which connect() keeps", async () => {
    const { backend, store } = manualClock(1_000_000, 100);
    await backend.saveSnapshot(
      inProgress("a", { updatedAt: 0, position: { kind: "AtTask", taskId: "t", priority: 5 } }),
    );
    await backend.saveSnapshot(
      inProgress("b", { updatedAt: 300, position: { kind: "AtTask", taskId: "t", priority: 1 } }),
    );
    expect(indexOf(store, "a")).toBe("ready:t@0");
    const order = async (b: InMemoryBackend) =>
      (await b.findAvailableTasks("w", 10)).map((t) => t.instanceId);
    expect(await order(backend)).toEqual(["b", "a"]); // 300 < 0 + 4 x 100
    expect(await order(backend.connect())).toEqual(["b", "a"]);
    expect(await order(backend.connect({ agingMs: 50 }))).toEqual(["a", "b"]); // 200 < 300
  });

  it("claimTask taking over an expired claim records no attempt; claim-next does", async () => {
    const { clock, backend, store } = manualClock();
    await backend.saveSnapshot(atTask("c", "t1", { updatedAt: 10 }));
    await claimOrFail(backend, "c", "t1", "w1", 10);
    clock.now += 20;
    await claimOrFail(backend, "c", "t1", "w2", 10);
    expect(store.instances.get("c")?.attempts.size).toBe(0);
    clock.now += 20;
    const [task] = await backend.claimAvailableTasks("w3", 1, 60_000);
    expect(task).toMatchObject({ instanceId: "c", attempt: 2 });
    expect(store.instances.get("c")?.attempts.get("t1")).toEqual({
      count: 1,
      lastError: null,
      lastFailedAt: null,
    });
  });
});
