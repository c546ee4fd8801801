import { atTask, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it, onTestFinished } from "vitest";
import { intercept } from "./faults.js";
import { freshBackend } from "./helpers.js";
import { createSubject, server } from "./subject.js";

// Claim-next in rounds (README, "Claim-next under contention"): overlapping calls of one backend
// share one discovery and take consecutive slices of the ready tasks, in discovery order.
const info = server();
const T0 = 1_800_000_000_000;

describe.skipIf(info === null)("claim-next rounds", () => {
  it("overlapping calls of one backend share discovery and split the head in order, without losing a race", async () => {
    const now = T0;
    const backend = await freshBackend({ clock: () => now });
    const base = uid("r");
    const ids = Array.from({ length: 40 }, (_, i) => `${base}-${String(i).padStart(2, "0")}`);
    await Promise.all(
      ids.map((id, i) => backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 - 1000 + i }))),
    );
    const counts = new Map<string, number>();
    intercept(backend.client, "initialize", async (call, send) => {
      counts.set(call.command, (counts.get(call.command) ?? 0) + 1);
      return send();
    });
    const calls = await Promise.all(
      Array.from({ length: 8 }, (_, k) => backend.claimAvailableTasks(`w${k}`, 4, 60_000)),
    );
    // The first call alone in its round gets the head; all together, the first 32 in order.
    expect(calls[0]?.map((t) => t.instanceId)).toEqual(ids.slice(0, 4));
    const all = calls.flat().map((t) => t.instanceId);
    expect(all.sort()).toEqual(ids.slice(0, 32));
    expect(calls.every((c) => c.length === 4)).toBe(true);
    // At most two rounds (the first call's, then the seven that arrived during it): 2 x (8 ready
    // + 8 timer + 8 leased) queries (8 calls alone: 192), one transaction per claim (none lost,
    // no claim re-read).
    expect(counts.get("QueryCommand")).toBeLessThanOrEqual(48);
    expect(counts.get("BatchGetItemCommand")).toBeLessThanOrEqual(2);
    expect(counts.get("TransactWriteItemsCommand")).toBe(32);
    expect(counts.get("GetItemCommand")).toBeUndefined();
    // The rest, to one caller alone: exactly the next ones in order.
    expect((await backend.claimAvailableTasks("w", 10, 60_000)).map((t) => t.instanceId)).toEqual(
      ids.slice(32),
    );
  });

  it("calls of two backends racing for the same tasks never share one, and each claimed task is out", async () => {
    const subject = await createSubject();
    const a = subject.backend;
    const b = await subject.connect();
    onTestFinished(async () => {
      await b.close();
      await subject.cleanup?.();
      await a.close();
    });
    const base = uid("c");
    const ids = Array.from({ length: 60 }, (_, i) => `${base}-${String(i).padStart(2, "0")}`);
    await Promise.all(ids.map((id) => a.saveSnapshot(atTask(id, "t1"))));
    const got: string[] = [];
    const worker = async (backend: typeof a, name: string) => {
      for (let empty = 0; empty < 2; ) {
        const tasks = await backend.claimAvailableTasks(name, 3, 60_000);
        if (tasks.length === 0) empty++;
        else empty = 0;
        got.push(...tasks.map((t) => t.instanceId));
      }
    };
    await Promise.all([
      ...Array.from({ length: 4 }, (_, k) => worker(a, `a${k}`)),
      ...Array.from({ length: 4 }, (_, k) => worker(b, `b${k}`)),
    ]);
    expect(got.sort()).toEqual([...ids].sort());
    expect(await a.findAvailableTasks("w", 10)).toEqual([]);
  });
});
