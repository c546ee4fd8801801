// Issue 16 in the reference worker: retries with a durable backoff (failTasks with retryAt), a
// durable sleep (AtTask with runAt), priorities and queues from the definition, and a worker that
// serves given queues.
import { setTimeout as delay } from "node:timers/promises";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  bytes,
  defineWorkflow,
  evaluate,
  runWorker,
  sleep,
  startWorkflow,
  step,
  text,
  type WorkerEvent,
  type WorkflowDefinition,
} from "../src/index.ts";
import { completed, type TestStore, testStores, waitFor } from "./backends.ts";

function fleet(backend: PersistentBackend, workflows: WorkflowDefinition[], queues?: string[], batch = 4) {
  const stop = new AbortController();
  const events: WorkerEvent[] = [];
  const run = runWorker({
    backend,
    workerId: queues === undefined ? "w-default" : `w-${queues.join("+")}`,
    workflows,
    leaseMs: 2000,
    batch,
    maxIdleMs: 10,
    signal: stop.signal,
    onEvent: (event) => events.push(event),
    ...(queues === undefined ? {} : { queues }),
  });
  return {
    events,
    stop: () => {
      stop.abort();
      return run;
    },
  };
}

const STORES = testStores("scheduling");

for (const [name, open] of STORES)
  describe(`scheduling in the worker loop (${name})`, () => {
    let store: TestStore;
    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await store.close();
    });

    it("a step that fails twice is retried with backoff and succeeds on attempt 3", async () => {
      const backend = store.root;
      const flaky = defineWorkflow("flaky-v1", [
        step(
          "charge",
          (input, context) => {
            if (context.attempt < 3) throw new Error(`declined (attempt ${context.attempt})`);
            return bytes(`${text(input)} charged on attempt ${context.attempt}`);
          },
          { retry: { attempts: 5, backoffMs: 40 } },
        ),
      ]);
      expect(text(await evaluate(flaky, bytes("o")))).toBe("o charged on attempt 3");
      await startWorkflow(backend, flaky, "flaky-1", bytes("o"));
      const workers = fleet(backend, [flaky]);
      await waitFor(completed(backend, "flaky-1"));
      const stats = await workers.stop();
      const snapshot = await backend.loadSnapshot("flaky-1");
      expect(snapshot.state).toMatchObject({ kind: "Completed" });
      expect(snapshot.attempts?.charge).toMatchObject({
        count: 2,
        lastError: expect.stringContaining("attempt 2"),
      });
      const claims = workers.events.filter((e) => e.type === "claimed");
      expect(claims.map((e) => e.attempt)).toEqual([1, 2, 3]);
      const retries = workers.events.filter((e) => e.type === "retrying");
      expect(retries.map((e) => e.attempt)).toEqual([1, 2]);
      // The backoff doubles (40 ms, then 80 ms) and the store never hands the task out before it.
      for (const [i, retry] of retries.entries()) {
        const next = claims[i + 1]!;
        expect(next.at).toBeGreaterThanOrEqual(retry.retryAt - 5);
      }
      expect(retries[1]!.retryAt - retries[0]!.retryAt).toBeGreaterThanOrEqual(80);
      expect(stats.retried).toBe(2);
    });

    it("a step that keeps failing fails its workflow after its last attempt", async () => {
      const backend = store.root;
      const broken = defineWorkflow("broken-v1", [
        step(
          "x",
          () => {
            throw new Error("always");
          },
          { retry: { attempts: 2, backoffMs: 10 } },
        ),
      ]);
      await startWorkflow(backend, broken, "broken-1", bytes("o"));
      const workers = fleet(backend, [broken]);
      await waitFor(async () => (await backend.loadSnapshot("broken-1")).state.kind === "Failed");
      const stats = await workers.stop();
      expect(stats.retried).toBe(1);
      expect(stats.failed).toBe(1);
    });

    it("a durable sleep: the step after it is not handed out before its runAt", async () => {
      const backend = store.root;
      const napping = defineWorkflow("nap-v1", [
        step("before", (input) => bytes(`${text(input)}>before`)),
        sleep("nap", 300),
        step("after", (input) => bytes(`${text(input)}>after`)),
      ]);
      await startWorkflow(backend, napping, "nap-1", bytes("o"));
      const workers = fleet(backend, [napping]);
      await waitFor(completed(backend, "nap-1"));
      await workers.stop();
      const after = workers.events.find((e) => e.type === "claimed" && e.taskId === "after");
      if (after?.type !== "claimed") throw new Error("missing events");
      const snapshot = await backend.loadSnapshot("nap-1");
      expect(snapshot.state).toMatchObject({ kind: "Completed" });
      if (snapshot.state.kind === "Completed")
        expect(text(snapshot.state.finalOutput)).toBe("o>before>after");
      // The runAt was set at the commit of "before" (after its claim) + 300 ms: "after" starts no earlier.
      expect(after.at).toBeGreaterThanOrEqual(claimedAt(workers.events, "before") + 300);
    });

    it("priorities from the definition: a high-priority workflow overtakes a backlog", async () => {
      const backend = store.root;
      const work = (input: Uint8Array) => bytes(`${text(input)}!`);
      const bulk = defineWorkflow("bulk-v1", [step("a", work), step("b", work)], { priority: 5 });
      const urgent = defineWorkflow("urgent-v1", [step("a", work), step("b", work)], { priority: 1 });
      for (let i = 0; i < 30; i++)
        await startWorkflow(backend, bulk, `bulk-${String(i).padStart(2, "0")}`, bytes("b"));
      await startWorkflow(backend, urgent, "urgent-1", bytes("u"));
      const workers = fleet(backend, [bulk, urgent], undefined, 1);
      await waitFor(async () => (await backend.listSnapshots()).length > 0 && (await allDone(backend)));
      await workers.stop();
      const order = workers.events.flatMap((e) =>
        e.type === "committed" && e.finished ? [e.instanceId] : [],
      );
      expect(order[0]).toBe("urgent-1");
      const claims = workers.events.filter((e) => e.type === "claimed" && e.instanceId === "urgent-1");
      expect(claims.every((e) => e.type === "claimed" && e.priority === 1)).toBe(true);
    });

    it("queues: a step in another queue runs only on a worker that serves it", async () => {
      const { root: backend, connect } = store;
      const routed = defineWorkflow("routed-v1", [
        step("cpu", (input) => bytes(`${text(input)}>cpu`)),
        step("gpu", (input, context) => bytes(`${text(input)}>gpu@${context.workerId}`), { queue: "gpu" }),
        step("done", (input) => bytes(`${text(input)}>done`)),
      ]);
      await startWorkflow(backend, routed, "routed-1", bytes("o"));
      const general = fleet(await connect(), [routed]);
      await waitFor(async () => {
        const s = (await backend.loadSnapshot("routed-1")).state;
        return s.kind === "InProgress" && s.position.kind === "AtTask" && s.position.taskId === "gpu";
      });
      await delay(100); // the default worker does not take it
      expect(general.events.some((e) => e.type === "claimed" && e.taskId === "gpu")).toBe(false);
      const gpu = fleet(await connect(), [routed], ["gpu"]);
      await waitFor(completed(backend, "routed-1"));
      await Promise.all([general.stop(), gpu.stop()]);
      const state = (await backend.loadSnapshot("routed-1")).state;
      if (state.kind !== "Completed") throw new Error(state.kind);
      expect(text(state.finalOutput)).toBe("o>cpu>gpu@w-gpu>done");
      expect(
        gpu.events.filter((e) => e.type === "claimed").map((e) => e.type === "claimed" && e.queue),
      ).toEqual(["gpu"]);
    });
  });

function claimedAt(events: WorkerEvent[], taskId: string): number {
  const e = events.find((x) => x.type === "claimed" && x.taskId === taskId);
  if (e?.type !== "claimed") throw new Error(`${taskId} never claimed`);
  return e.at;
}

async function allDone(backend: PersistentBackend): Promise<boolean> {
  for (const id of await backend.listSnapshots()) {
    if ((await backend.loadSnapshot(id)).state.kind !== "Completed") return false;
  }
  return true;
}
