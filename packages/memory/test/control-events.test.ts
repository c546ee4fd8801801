import { isClaimLive, type TaskClaim } from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { atTask, awaiting, claimOrFail, text } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { InMemoryBackend, MemoryStore } from "../src/index.js";

// What the kit cannot see: which index an instance sits in after each operation (discovery reads
// only the ready and the timer index, never the instances), their order, and the event records.

/** A backend on a clock the test moves by hand. */
function manualClock(start = 1_000_000) {
  const clock = { now: start };
  const backend = new InMemoryBackend({ store: new MemoryStore(() => clock.now) });
  return { clock, backend, store: backend.store };
}

/** Where an instance is indexed: "ready", "timer" (the due index) or "none" (never both). */
function indexOf(store: MemoryStore, id: string): string {
  const ready = store.ready.get(id);
  const timer = store.due.get(id);
  if (ready !== undefined && timer !== undefined) throw new Error(`${id} is in both indexes`);
  return ready !== undefined
    ? `ready:${ready.taskId}@${ready.at}`
    : timer
      ? `timer:${timer.taskId}@${timer.at}`
      : "none";
}

describe("memory: the ready index and the timer index", () => {
  it("a wait moves between the indexes as events, pause, resume, results and cancel change it", async () => {
    const { backend, store } = manualClock();
    await backend.saveSnapshot(awaiting("w", "go", "t2", { timeoutAt: 5_000_000, updatedAt: 10 }));
    expect(indexOf(store, "w")).toBe("timer:t2@5000000");
    await backend.sendEvent("w", "other", text("x"));
    expect(indexOf(store, "w")).toBe("timer:t2@5000000");
    await backend.sendEvent("w", "go", text("y"));
    expect(indexOf(store, "w")).toBe("ready:t2@10");
    await backend.pauseWorkflow("w");
    expect(indexOf(store, "w")).toBe("none");
    await backend.resumeWorkflow("w");
    expect(indexOf(store, "w")).toBe("ready:t2@1000000"); // resume sets updatedAt to now
    // A result for the awaited task closes the wait (the position no longer offers it).
    await backend.saveTaskResult("w", "t2", text("r"));
    expect(indexOf(store, "w")).toBe("none");
    // Without a timeout and without an event: in neither index.
    await backend.saveSnapshot(awaiting("n", "go", "t1"));
    expect(indexOf(store, "n")).toBe("none");
    await backend.cancelWorkflow("n");
    expect(indexOf(store, "n")).toBe("none");
    await backend.deleteSnapshot("w");
    expect(indexOf(store, "w")).toBe("none");
  });

  it("a consumed event leaves the wait to the next one of its name, else to its timer", async () => {
    const { backend, store } = manualClock();
    await backend.saveSnapshot(awaiting("w", "go", "t1", { timeoutAt: 2_000_000 }));
    await backend.sendEvent("w", "go", text("a"));
    const [task] = await backend.claimAvailableTasks("worker", 1, 60_000);
    if (task?.event === undefined) throw new Error("no event-ready task");
    const again = awaiting("w", "go", "t2", { timeoutAt: 3_000_000, completed: { t1: text("r1") } });
    await backend.saveSnapshot(again, { claim: task.claim, consumeEvent: task.event });
    expect(indexOf(store, "w")).toBe("timer:t2@3000000");
    expect(await backend.loadPendingEvents("w")).toEqual([]);
  });

  it("discovery merges ready tasks (by updatedAt) with due timers (by timeoutAt), ties by code point", async () => {
    const { clock, backend } = manualClock(100);
    // U+FF61 sorts before U+1F600 by code point, after it by UTF-16 code unit.
    const bmp = "w-\uff61";
    const astral = "w-\u{1f600}";
    await backend.saveSnapshot(awaiting(astral, "e", "t", { timeoutAt: 50 }));
    await backend.saveSnapshot(awaiting(bmp, "e", "t", { timeoutAt: 50 }));
    await backend.saveSnapshot(atTask("ready-40", "t", { updatedAt: 40 }));
    await backend.saveSnapshot(atTask("ready-60", "t", { updatedAt: 60 }));
    await backend.saveSnapshot(awaiting("later", "e", "t", { timeoutAt: 101 }));
    const order = async () => (await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId);
    expect(await order()).toEqual(["ready-40", bmp, astral, "ready-60"]);
    clock.now = 101; // due at timeoutAt
    expect(await order()).toEqual(["ready-40", bmp, astral, "ready-60", "later"]);
    expect((await backend.findAvailableTasks("w", 10)).find((t) => t.instanceId === "later")).toMatchObject({
      taskId: "t",
      timedOut: true,
      input: new Uint8Array(0),
    });
    // A claimed timer-ready task stays indexed but is skipped while its claim lives.
    await claimOrFail(backend, bmp, "t", "w", 10);
    expect(await order()).toEqual(["ready-40", astral, "ready-60", "later"]);
    clock.now = 111;
    expect(await order()).toEqual(["ready-40", bmp, astral, "ready-60", "later"]);
  });
});

describe("memory: control and event records", () => {
  it("cancel expires every claim at the epoch, keeping its record and token; results stay", async () => {
    const { clock, backend, store } = manualClock();
    await backend.saveSnapshot(atTask("c", "t1", { completed: { t0: text("zero") } }));
    const running = await claimOrFail(backend, "c", "t1", "w1", 60_000);
    const forever = await claimOrFail(backend, "c", "side", "w2", null);
    clock.now += 5;
    await backend.cancelWorkflow("c");
    expect(store.claim("c", "t1")).toMatchObject({
      token: running.token,
      workerId: "w1",
      expiresAt: REVOKED_EXPIRY,
    });
    expect(store.claim("c", "side")).toMatchObject({ token: forever.token, expiresAt: REVOKED_EXPIRY });
    // A clock stepping back does not revive a revoked claim (an expiry of "now" would be live
    // again): another worker can take the task, with a larger token.
    clock.now -= 1_000;
    expect(isClaimLive(store.claim("c", "side") as TaskClaim, clock.now)).toBe(false);
    const after = await claimOrFail(backend, "c", "side", "w3", 60_000);
    expect(after.token).toBeGreaterThan(forever.token);
    expect([...(store.instances.get("c")?.results.keys() ?? [])]).toEqual(["t0"]);
    expect(store.instances.get("c")).toMatchObject({ status: "Cancelled", finished: true });
    // The holder may still release its revoked claim.
    await backend.releaseTaskClaim("c", "t1", "w1");
    expect(store.claim("c", "t1")).toBeUndefined();
  });

  it("events are numbered per instance across names, sentAt by the store's clock; terminal writes drop them", async () => {
    const { clock, backend } = manualClock(7_000);
    await backend.saveSnapshot(awaiting("a", "x", "t1"));
    await backend.saveSnapshot(awaiting("b", "x", "t1"));
    expect(await backend.sendEvent("a", "x", text("1"))).toBe(1);
    clock.now = 7_001;
    expect(await backend.sendEvent("a", "y", text("2"))).toBe(2);
    expect(await backend.sendEvent("b", "x", text("3"))).toBe(1);
    expect(await backend.sendEvent("a", "x", text("4"))).toBe(3);
    const events = await backend.loadPendingEvents("a");
    expect(events.map((e) => [e.eventName, e.sequence, e.sentAt])).toEqual([
      ["x", 1, 7_000],
      ["y", 2, 7_001],
      ["x", 3, 7_001],
    ]);
    // Loaded payloads are copies: changing them does not reach the store.
    events[0]?.payload.fill(0);
    expect(Array.from((await backend.loadPendingEvents("a"))[0]?.payload ?? [])).toEqual(
      Array.from(text("1")),
    );
    // A write that makes the workflow terminal drops its pending events.
    await backend.saveSnapshot({ ...awaiting("a", "x", "t1"), state: { kind: "Failed", error: "boom" } });
    expect(await backend.loadPendingEvents("a")).toEqual([]);
    expect((await backend.loadPendingEvents("b")).map((e) => e.sequence)).toEqual([1]);
  });

  it("a paused workflow keeps results that land and stays out of the indexes until resumed", async () => {
    const { backend, store } = manualClock();
    await backend.saveSnapshot(atTask("p", "t1"));
    const claim = await claimOrFail(backend, "p", "t1", "w1", 60_000);
    await backend.pauseWorkflow("p");
    expect((await backend.extendTaskClaim("p", "t1", "w1", 1_000)).workflowPaused).toBe(true);
    expect(await backend.completeTasks([{ claim, output: text("one") }])).toEqual([null]);
    expect(indexOf(store, "p")).toBe("none");
    await backend.resumeWorkflow("p");
    // t1 has its result now: the resumed workflow at t1 offers nothing until it moves on.
    expect(indexOf(store, "p")).toBe("none");
    expect((await backend.loadSnapshot("p")).state).toMatchObject({
      kind: "InProgress",
      lastCompletedTaskId: "t1",
    });
  });
});
