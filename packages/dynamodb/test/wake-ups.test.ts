import type { WakeProbe } from "@sayiir/persistence-core";
import { queued, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import type { DynamoDBBackend } from "../src/index.js";
import { probeRequestsPerQueue } from "../src/wake-ups.js";
import { intercept, record } from "./faults.js";
import { freshBackend } from "./helpers.js";
import { server } from "./subject.js";

// What the conformance group cannot see of waiting on DynamoDB: what an idle waiter costs in
// requests, and what the probe reads from each index partition.
const info = server();
const T0 = 1_800_000_000_000;

/** The probe a wait runs, called directly. */
const probe = (backend: DynamoDBBackend, queues: string[]): Promise<WakeProbe> =>
  (backend as unknown as { doProbeWakeUp(q: string[]): Promise<WakeProbe> }).doProbeWakeUp(queues);

describe.skipIf(info === null)("DynamoDB wake-ups", () => {
  it("declares poll wake-ups; an idle waiter costs at most 2000 / wakeBoundMs + the ramp's probes over 2 s, each 3 x shards keys-only Queries", async () => {
    const backend = await freshBackend({ readyShards: 4 });
    expect(backend.capabilities).toMatchObject({ wakeUps: "poll", wakeBoundMs: 200 });
    const calls = record(backend.client);
    const idleMs = 2_000;
    expect(await backend.waitForTasks({ queues: [uid("idle")], timeoutMs: idleMs })).toBe("timeout");
    // Nothing but the probes' Queries: no item read, no payload.
    expect(new Set(calls.map((c) => c.command))).toEqual(new Set(["QueryCommand"]));
    for (const call of calls) {
      expect(call.input).toMatchObject({ Limit: 1, ProjectionExpression: expect.any(String) });
    }
    const perProbe = probeRequestsPerQueue(4);
    expect(calls.length % perProbe).toBe(0);
    const probes = calls.length / perProbe;
    // The adaptive poll starts at 10 ms and doubles up to the bound: 5 looks before it is there.
    const ramp = 6;
    expect(probes).toBeLessThanOrEqual(idleMs / backend.capabilities.wakeBoundMs + ramp);
    expect(probes).toBeGreaterThanOrEqual(3);
  }, 30_000);

  it("the probe: a ready entry is ready; a timer gives its due time, then is ready when due; a lease gives its end", async () => {
    let now = T0 + 10_000;
    const backend = await freshBackend({ clock: () => now, readyShards: 2, clockSkewBudgetMs: 0 });
    const q = uid("q");
    expect(await probe(backend, [q])).toEqual({ ready: false, nextDueAt: null });
    await backend.saveSnapshot(queued(uid("later"), q, now + 5_000));
    expect(await probe(backend, [q])).toEqual({ ready: false, nextDueAt: now + 5_000 });
    expect(await probe(backend, [uid("other")])).toEqual({ ready: false, nextDueAt: null });
    now += 5_000;
    expect(await probe(backend, [q])).toEqual({ ready: true, nextDueAt: null });
    const [claimed] = await backend.claimAvailableTasks("w", 1, 3_000, { queues: [q] });
    expect(claimed).toBeDefined();
    expect(await probe(backend, [q])).toEqual({ ready: false, nextDueAt: now + 3_000 });
    now += 3_000;
    expect(await probe(backend, [q])).toEqual({ ready: true, nextDueAt: null });
    const ready = uid("ready");
    await backend.saveSnapshot(queued(ready, uid("q2")));
    expect((await probe(backend, [uid("none"), q])).ready).toBe(true);
  }, 30_000);

  it("close() under a probe in flight: the wait ends 'closed', not with the destroyed client's error", async () => {
    const backend = await freshBackend({ readyShards: 1 });
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let held = 0;
    // Every Query of the probe waits for the gate, then fails as a request cut by destroy() does.
    intercept(backend.client, "deserialize", async (call, send) => {
      if (call.command !== "QueryCommand") return send();
      held++;
      await gate;
      throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    });
    const wait = backend.waitForTasks({ queues: [uid("q")], timeoutMs: 20_000 });
    while (held === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await backend.close();
    release();
    expect(await wait).toBe("closed");
  }, 30_000);
});
