import { setTimeout as delay } from "node:timers/promises";
import { bytesEqual } from "@sayiir/persistence-core";
import { describe, expect, it } from "vitest";
import {
  bytes,
  defineWorkflow,
  fanOut,
  runWorker,
  startWorkflow,
  step,
  text,
  type WorkerEvent,
  type WorkflowDefinition,
} from "../src/index.ts";
import { BACKENDS, completed, waitFor } from "./backends.ts";

/** A fresh in-memory store: `root` is its first client, `connect()` gives more. */
const memoryStore = async () => {
  const store = await BACKENDS.memory.create({});
  return { root: store.backend, connect: store.connect };
};
type Store = Awaited<ReturnType<typeof memoryStore>>;

async function startFleet(store: Store, workflows: WorkflowDefinition[], ids: string[], leaseMs: number) {
  const stop = new AbortController();
  const events: WorkerEvent[] = [];
  const clients = await Promise.all(ids.map(() => store.connect()));
  const runs = ids.map((workerId, i) =>
    runWorker({
      backend: clients[i]!,
      workerId,
      workflows,
      leaseMs,
      batch: 4,
      signal: stop.signal,
      onEvent: (event) => events.push(event),
    }),
  );
  return {
    events,
    stop: async () => {
      stop.abort();
      return Promise.all(runs);
    },
  };
}

describe("runWorker", () => {
  it("heartbeats keep a task alive well past its lease", async () => {
    const store = await memoryStore();
    const { root } = store;
    let calls = 0;
    const slow = defineWorkflow("slow", [
      step("long", async (input) => {
        calls++;
        await delay(1000); // 5 leases
        return bytes(`long(${text(input)})`);
      }),
    ]);
    await startWorkflow(root, slow, "w1", bytes("x"));
    const fleet = await startFleet(store, [slow], ["a", "b"], 200);
    await waitFor(completed(root, "w1"));
    await fleet.stop();
    expect(calls).toBe(1);
    expect(fleet.events.filter((e) => e.type === "claimed")).toHaveLength(1);
    const state = (await root.loadSnapshot("w1")).state;
    expect(state.kind === "Completed" && text(state.finalOutput)).toBe("long(x)");
  });

  it("a worker whose lease was taken over gets its fenced commit refused and does not advance", async () => {
    const store = await memoryStore();
    const { root } = store;
    let releaseStale!: () => void;
    const staleMayWrite = new Promise<void>((resolve) => {
      releaseStale = resolve;
    });
    const wf = defineWorkflow("takeover", [
      step("first", async (_input, context) => bytes(`first by ${context.workerId}`)),
      step("second", async (input) => bytes(`second(${text(input)})`)),
    ]);
    await startWorkflow(root, wf, "w1", bytes(""));
    // The stale worker pauses (think: a long GC pause) between its task and its commit, without heartbeats.
    const staleBackend = await store.connect();
    const complete = staleBackend.completeTasks.bind(staleBackend);
    staleBackend.completeTasks = async (...args) => {
      await staleMayWrite;
      return complete(...args);
    };
    const staleEvents: WorkerEvent[] = [];
    const stopStale = new AbortController();
    const stale = runWorker({
      backend: staleBackend,
      workerId: "stale",
      workflows: [wf],
      leaseMs: 150,
      heartbeatMs: 0,
      signal: stopStale.signal,
      onEvent: (event) => staleEvents.push(event),
    });
    await waitFor(async () => staleEvents.some((e) => e.type === "claimed"));
    stopStale.abort();
    // The lease expires; a second worker takes the task over and finishes the workflow.
    const fleet = await startFleet(store, [wf], ["fresh"], 150);
    await waitFor(completed(root, "w1"));
    await fleet.stop();
    const before = await root.loadSnapshot("w1");
    releaseStale();
    await stale;
    expect(staleEvents.filter((e) => e.type === "committed")).toHaveLength(0);
    expect(staleEvents.some((e) => e.type === "lost" && e.during === "commit")).toBe(true);
    const after = await root.loadSnapshot("w1");
    expect(after).toEqual(before);
    expect(after.state.kind === "Completed" && text(after.state.finalOutput)).toBe("second(first by fresh)");
    expect(
      fleet.events.filter((e) => e.type === "committed").map((e) => e.type === "committed" && e.taskId),
    ).toEqual(["first", "second"]);
  });

  it("a fan-out's branches run concurrently and its join is advanced exactly once", async () => {
    const store = await memoryStore();
    const { root } = store;
    let joins = 0;
    let running = 0;
    let maxRunning = 0;
    const branch = (name: string) => async (input: Uint8Array) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await delay(30);
      running--;
      return bytes(`${name}(${text(input)})`);
    };
    const names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    const wf = defineWorkflow("fan", [
      fanOut(
        "fan",
        names.map((n) => branch(n)),
        async (outputs) => {
          joins++;
          return bytes(outputs.map(text).join("+"));
        },
      ),
    ]);
    await startWorkflow(root, wf, "p", bytes("in"));
    const fleet = await startFleet(store, [wf], ["w0", "w1", "w2", "w3"], 500);
    await waitFor(completed(root, "p"));
    await fleet.stop();
    expect(joins).toBe(1);
    expect(maxRunning).toBeGreaterThan(1);
    const recorded = fleet.events.filter((e) => e.type === "branch-recorded");
    expect(recorded).toHaveLength(names.length);
    expect(recorded.filter((e) => e.type === "branch-recorded" && e.joinReady)).toHaveLength(1);
    expect(fleet.events.filter((e) => e.type === "committed" && e.taskId === "fan:join")).toHaveLength(1);
    const state = (await root.loadSnapshot("p")).state;
    const want = names.map((n) => `${n}(in)`).join("+");
    expect(state.kind === "Completed" && bytesEqual(state.finalOutput, bytes(want))).toBe(true);
    // Children are complete too.
    for (let i = 0; i < names.length; i++) {
      expect((await root.loadSnapshot(`p#fan:${i}`)).state.kind).toBe("Completed");
    }
  });

  it("a failing task fails its workflow (and a failing branch fails the parent)", async () => {
    const store = await memoryStore();
    const { root } = store;
    const wf = defineWorkflow("boom", [
      fanOut(
        "fan",
        [
          async () => bytes("ok"),
          async () => {
            throw new Error("kaput");
          },
        ],
        async (outputs) => outputs[0]!,
      ),
    ]);
    await startWorkflow(root, wf, "p", bytes(""));
    const fleet = await startFleet(store, [wf], ["w0", "w1"], 500);
    await waitFor(async () => (await root.loadSnapshot("p")).state.kind === "Failed");
    await fleet.stop();
    const state = (await root.loadSnapshot("p")).state;
    expect(state.kind === "Failed" && state.error).toContain("kaput");
    expect(fleet.events.some((e) => e.type === "failed")).toBe(true);
  });
});
