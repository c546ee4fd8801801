// Issue 18 in the reference worker: an idle worker waits on the store (waitForTasks) instead of
// sleeping, so a task saved by another client is claimed within the backend's wake-up bound, and
// stopping an idle worker is immediate.
import { setTimeout as delay } from "node:timers/promises";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { bytes, defineWorkflow, runWorker, startWorkflow, step, type WorkerEvent } from "../src/index.ts";
import { type TestStore, testStores, waitFor } from "./backends.ts";

const quick = defineWorkflow("wake-v1", [step("only", async (input) => input)]);

/** The longest a save may take to be claimed by an idle worker: push well under the old 200 ms sleep. */
function wakeBound(backend: PersistentBackend): number {
  const { wakeUps, wakeBoundMs } = backend.capabilities;
  return wakeUps === "push" ? 100 : wakeBoundMs + 200;
}

/** One worker on its own client; `claimedAt` maps an instance to the local time of its first claim. */
function idleWorker(backend: PersistentBackend) {
  const stop = new AbortController();
  const events: WorkerEvent[] = [];
  const claimedAt = new Map<string, number>();
  const run = runWorker({
    backend,
    workerId: "idle",
    workflows: [quick],
    leaseMs: 2000,
    signal: stop.signal,
    onEvent: (event) => {
      events.push(event);
      if (event.type === "claimed" && !claimedAt.has(event.instanceId))
        claimedAt.set(event.instanceId, Date.now());
    },
  });
  return {
    events,
    claimedAt,
    stop: () => {
      stop.abort();
      return run;
    },
  };
}

for (const [name, open] of testStores("wake-ups"))
  describe(`an idle worker waits on the store (${name})`, () => {
    let store: TestStore;
    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await store.close();
    });

    it("claims a task saved by another client within the wake-up bound", async () => {
      const worker = idleWorker(await store.connect());
      const bound = wakeBound(store.root);
      const latencies: number[] = [];
      for (let i = 0; i < 5; i++) {
        // Long enough idle that the old loop's sleep had grown to its 200 ms cap.
        await delay(400);
        const id = `wake-${i}`;
        await startWorkflow(store.root, quick, id, bytes("x"));
        const saved = Date.now();
        await waitFor(() => worker.claimedAt.has(id), 10_000, `the claim of ${id}`);
        latencies.push(worker.claimedAt.get(id)! - saved);
      }
      const stats = await worker.stop();
      expect(stats.claimed).toBe(5);
      expect(stats.errors).toBe(0);
      expect(Math.max(...latencies), `latencies ${latencies.join(", ")} ms`).toBeLessThan(bound);
    });

    it("stop() of an idle worker returns promptly", async () => {
      const worker = idleWorker(await store.connect());
      await delay(300); // idle, inside a waitForTasks of 30 s
      const asked = Date.now();
      const stats = await worker.stop();
      expect(Date.now() - asked).toBeLessThan(100);
      expect(stats.errors).toBe(0);
      expect(worker.events).toHaveLength(0);
    });
  });
