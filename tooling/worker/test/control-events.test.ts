// The reference loop with workflow control (cancel, pause/resume) and events (a step that waits
// for an event, with a timeout), on the memory reference and on SQLite.
import { setTimeout as delay } from "node:timers/promises";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { describe, expect, it } from "vitest";
import {
  bytes,
  defineWorkflow,
  evaluate,
  runWorker,
  startWorkflow,
  step,
  text,
  type WorkerEvent,
  type WorkerStats,
  type WorkflowDefinition,
  waitForEvent,
} from "../src/index.ts";
import { type TestStore, testStores } from "./backends.ts";

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

const STORES = testStores("control");
type Store = TestStore;

/** Workers over `store` that record their events; `stop()` drains them. */
async function fleet(store: Store, workflows: WorkflowDefinition[], count: number, leaseMs: number) {
  const stop = new AbortController();
  const events: WorkerEvent[] = [];
  const runs: Promise<WorkerStats>[] = [];
  for (let i = 0; i < count; i++) {
    const backend = await store.connect();
    runs.push(
      runWorker({
        backend,
        workerId: `w${i}`,
        workflows,
        leaseMs,
        heartbeatMs: Math.floor(leaseMs / 4),
        maxIdleMs: 20,
        signal: stop.signal,
        onEvent: (event) => events.push(event),
      }),
    );
  }
  return {
    events,
    of: <T extends WorkerEvent["type"]>(type: T, instanceId?: string) =>
      events.filter(
        (e): e is Extract<WorkerEvent, { type: T }> =>
          e.type === type && (instanceId === undefined || ("instanceId" in e && e.instanceId === instanceId)),
      ),
    stop: async () => {
      stop.abort();
      return Promise.all(runs);
    },
  };
}

const state = async (backend: PersistentBackend, id: string) => (await backend.loadSnapshot(id)).state;
const output = async (backend: PersistentBackend, id: string) => {
  const s = await state(backend, id);
  return s.kind === "Completed" ? text(s.finalOutput) : s.kind;
};

for (const [name, open] of STORES) {
  describe(`runWorker with control and events (${name})`, () => {
    it("a cancel stops the running task (heartbeat refused), writes nothing and runs nothing more", async () => {
      const store = await open();
      let calls = 0;
      const wf = defineWorkflow("cancel-me", [
        step("first", async (input) => bytes(`first(${text(input)})`)),
        step("long", async (input, context) => {
          calls++;
          await delay(2_000, undefined, { signal: context.signal });
          return bytes(`long(${text(input)})`);
        }),
        step("last", async (input) => bytes(`last(${text(input)})`)),
      ]);
      await startWorkflow(store.root, wf, "c1", bytes("x"));
      const workers = await fleet(store, [wf], 2, 300);
      try {
        await waitFor("the long step to run", () =>
          workers.of("claimed", "c1").some((e) => e.taskId === "long"),
        );
        await store.root.cancelWorkflow("c1", { reason: "withdrawn", requestedBy: "test" });
        await waitFor("the running task to stop", () => workers.of("lost", "c1").length > 0);
        await delay(600); // two leases: nothing claims or commits it again
      } finally {
        await workers.stop();
      }
      const final = await state(store.root, "c1");
      expect(final).toMatchObject({ kind: "Cancelled", reason: "withdrawn", interruptedAtTaskId: "long" });
      expect(Object.keys(final.kind === "Cancelled" ? final.completedTasks : {})).toEqual(["first"]);
      expect(workers.of("lost", "c1").map((e) => e.during)).toEqual(["heartbeat"]);
      expect(workers.of("committed", "c1").map((e) => e.taskId)).toEqual(["first"]);
      expect(workers.of("claimed", "c1").map((e) => e.taskId)).toEqual(["first", "long"]);
      expect(calls).toBe(1);
      await store.close();
    });

    it("a pause stops the running task early and releases it; after resume it runs again and completes", async () => {
      const store = await open();
      let calls = 0;
      const wf = defineWorkflow("pause-me", [
        step("long", async (input, context) => {
          calls++;
          await delay(calls === 1 ? 5_000 : 10, undefined, { signal: context.signal });
          return bytes(`long(${text(input)})`);
        }),
        step("last", async (input) => bytes(`last(${text(input)})`)),
      ]);
      await startWorkflow(store.root, wf, "p1", bytes("x"));
      const workers = await fleet(store, [wf], 2, 300);
      try {
        await waitFor("the long step to run", () => workers.of("claimed", "p1").length > 0);
        await store.root.pauseWorkflow("p1", { reason: "incident" });
        await waitFor("the task to stop", () => workers.of("released", "p1").length > 0);
        expect(workers.of("paused", "p1").map((e) => e.during)).toEqual(["heartbeat"]);
        await delay(700); // paused: no claim, no commit
        expect(workers.of("claimed", "p1")).toHaveLength(1);
        expect(await state(store.root, "p1")).toMatchObject({
          kind: "Paused",
          position: { kind: "AtTask", taskId: "long" },
          completedTasks: {},
        });
        await store.root.resumeWorkflow("p1");
        await waitFor("completion", async () => (await state(store.root, "p1")).kind === "Completed");
      } finally {
        await workers.stop();
      }
      expect(await output(store.root, "p1")).toBe("last(long(x))");
      expect(calls).toBe(2);
      expect(workers.of("committed", "p1").map((e) => e.taskId)).toEqual(["long", "last"]);
      await store.close();
    });

    it("a pause that lands between the task and its commit: nothing committed, released, run again after resume", async () => {
      const store = await open();
      let calls = 0;
      const wf = defineWorkflow("pause-late", [
        step("quick", async (input) => {
          if (++calls === 1) await store.root.pauseWorkflow("p2"); // paused while we hold the claim
          return bytes(`quick(${text(input)})`);
        }),
      ]);
      await startWorkflow(store.root, wf, "p2", bytes("y"));
      const workers = await fleet(store, [wf], 1, 10_000);
      try {
        await waitFor("the task to stop", () => workers.of("paused", "p2").length > 0);
        // Seen by the step's one write (completeTasks with next refuses a paused workflow).
        expect(workers.of("paused", "p2").map((e) => e.during)).toEqual(["commit"]);
        await waitFor("the release", () => workers.of("released", "p2").length > 0);
        expect((await state(store.root, "p2")).kind).toBe("Paused");
        await store.root.resumeWorkflow("p2");
        await waitFor("completion", async () => (await state(store.root, "p2")).kind === "Completed");
      } finally {
        await workers.stop();
      }
      expect(await output(store.root, "p2")).toBe("quick(y)");
      expect(workers.of("committed", "p2")).toHaveLength(1);
      await store.close();
    });

    it("a step waits for its event (sent before or after the wait) and consumes it once, in order", async () => {
      const store = await open();
      const wf = defineWorkflow("approve", [
        step("request", async (input) => bytes(`request(${text(input)})`)),
        waitForEvent("decide", "approval", { timeoutMs: 600_000 }, async (payload, context) =>
          bytes(`decide[${text(payload)}](${text(context.stageInput ?? new Uint8Array())})`),
        ),
        waitForEvent("again", "approval", { timeoutMs: null }, async (payload, context) =>
          bytes(`again[${text(payload)}](${text(context.stageInput ?? new Uint8Array())})`),
        ),
      ]);
      await startWorkflow(store.root, wf, "early", bytes("e"));
      await startWorkflow(store.root, wf, "late", bytes("l"));
      // Sent before the workflow waits: kept until it does.
      const early = [
        await store.root.sendEvent("early", "approval", bytes("one")),
        await store.root.sendEvent("early", "approval", bytes("two")),
      ];
      const workers = await fleet(store, [wf], 2, 500);
      const late: number[] = [];
      try {
        await waitFor("late to wait", async () => {
          const s = await state(store.root, "late");
          return s.kind === "InProgress" && s.position.kind === "AwaitingEvent";
        });
        await delay(100);
        expect((await state(store.root, "late")).kind).toBe("InProgress"); // still waiting
        late.push(await store.root.sendEvent("late", "approval", bytes("A")));
        await waitFor("late's second wait", async () => {
          const s = await state(store.root, "late");
          return (
            s.kind === "InProgress" &&
            s.position.kind === "AwaitingEvent" &&
            s.position.nextTaskId === "again"
          );
        });
        late.push(await store.root.sendEvent("late", "approval", bytes("B")));
        await waitFor("completion", async () =>
          (await Promise.all(["early", "late"].map((id) => state(store.root, id)))).every(
            (s) => s.kind === "Completed",
          ),
        );
      } finally {
        await workers.stop();
      }
      expect(await output(store.root, "early")).toBe("again[two](decide[one](request(e)))");
      expect(await output(store.root, "late")).toBe("again[B](decide[A](request(l)))");
      for (const [id, sent] of [
        ["early", early],
        ["late", late],
      ] as const) {
        const consumed = workers.of("committed", id).flatMap((e) => (e.event ? [e.event] : []));
        expect(consumed).toEqual([
          { eventName: "approval", sequence: sent[0] },
          { eventName: "approval", sequence: sent[1] },
        ]);
        expect(await store.root.loadPendingEvents(id)).toEqual([]);
      }
      await store.close();
    });

    it("a wait that times out runs its timeout path; a wait as the first stage works too", async () => {
      const store = await open();
      const wf = defineWorkflow("expire", [
        waitForEvent(
          "decide",
          "approval",
          {
            timeoutMs: 150,
            onTimeout: async (input, context) => bytes(`timeout:${context.timedOut}(${text(input)})`),
          },
          async (payload) => bytes(`approved(${text(payload)})`),
        ),
        step("ship", async (input) => bytes(`ship(${text(input)})`)),
      ]);
      await startWorkflow(store.root, wf, "t1", bytes("in"));
      await startWorkflow(store.root, wf, "t2", bytes("in"));
      await store.root.sendEvent("t2", "approval", bytes("ok"));
      const workers = await fleet(store, [wf], 1, 500);
      try {
        await waitFor("completion", async () =>
          (await Promise.all(["t1", "t2"].map((id) => state(store.root, id)))).every(
            (s) => s.kind === "Completed",
          ),
        );
      } finally {
        await workers.stop();
      }
      expect(await output(store.root, "t1")).toBe("ship(timeout:true(in))");
      expect(text(await evaluate(wf, bytes("in")))).toBe("ship(timeout:true(in))");
      expect(await output(store.root, "t2")).toBe("ship(approved(ok))");
      expect(text(await evaluate(wf, bytes("in"), { approval: bytes("ok") }))).toBe("ship(approved(ok))");
      expect(workers.of("committed", "t1").find((e) => e.taskId === "decide")?.timedOut).toBe(true);
      expect(workers.of("committed", "t2").find((e) => e.taskId === "decide")?.event?.eventName).toBe(
        "approval",
      );
      await store.close();
    });
  });
}
