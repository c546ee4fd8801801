import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import { ErrorCode, PersistenceError } from "../../errors.js";
import { MAX_LIMIT } from "../../validation.js";
import { atTask, comparable, finished } from "../fixtures.js";
import { claimOrFail, expirySlackMs, rejection, sleep, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/** Is the task's claim still held? (Another worker's claimTask answers null while it is.) */
async function isHeld(backend: PersistentBackend, instanceId: string, taskId: string): Promise<boolean> {
  const probe = await backend.claimTask(instanceId, taskId, `probe-${uid()}`, 30_000);
  return probe === null;
}

async function resultOf(
  backend: PersistentBackend,
  instanceId: string,
  taskId: string,
): Promise<string | undefined> {
  const loaded = await backend.loadSnapshot(instanceId);
  if (loaded.state.kind !== "InProgress") return undefined;
  const output = loaded.state.completedTasks[taskId]?.output;
  return output === undefined ? undefined : new TextDecoder().decode(output);
}

export function completionGroup(options: ConformanceOptions): void {
  describe("completion", () => {
    it("stores each result, sets lastCompletedTaskId and updatedAt, and releases each claim", async () => {
      const { backend } = await useSubject(options);
      const ids = [uid(), uid(), uid()];
      for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_700_000_000_000 }));
      const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t1", "worker-1")));
      const startedAt = Date.now();
      const outcomes = await backend.completeTasks(
        claims.map((claim) => ({ claim, output: text(`out-${claim.instanceId}`) })),
      );
      expect(outcomes).toEqual([null, null, null]);
      for (const [i, id] of ids.entries()) {
        const loaded = await backend.loadSnapshot(id);
        if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
        expect(loaded.state.lastCompletedTaskId).toBe("t1");
        expect(await resultOf(backend, id, "t1")).toBe(`out-${id}`);
        expect(loaded.updatedAt).toBeGreaterThanOrEqual(startedAt - 2_000);
        expect(loaded.updatedAt).toBeLessThanOrEqual(Date.now() + 2_000);
        // Released: another worker claims at once, with a greater token.
        const next = await backend.claimTask(id, "t1", "worker-2", 30_000);
        expect(next?.token).toBeGreaterThan(claims[i]?.token ?? Number.POSITIVE_INFINITY);
      }
      // Completed tasks are no longer offered.
      expect(await backend.findAvailableTasks("worker-3", 10)).toEqual([]);
    });

    it("several tasks of one instance completed in one call all land", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "a"));
      const tasks = ["a", "b", "c", "d", "e"];
      const claims = await Promise.all(tasks.map((t) => claimOrFail(backend, id, t, `worker-${t}`)));
      const outcomes = await backend.completeTasks(
        claims.map((claim) => ({ claim, output: text(claim.taskId) })),
      );
      expect(outcomes).toEqual(tasks.map(() => null));
      const loaded = await backend.loadSnapshot(id);
      if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
      expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(tasks);
      for (const t of tasks) expect(await resultOf(backend, id, t)).toBe(t);
      expect(tasks).toContain(loaded.state.lastCompletedTaskId);
      for (const t of tasks) expect(await isHeld(backend, id, t)).toBe(false);
    });

    it("a stale claim is refused for its own completion only; the others land", async () => {
      const { backend } = await useSubject(options);
      const [a, b] = [uid(), uid()];
      await backend.saveSnapshot(atTask(a, "t1"));
      await backend.saveSnapshot(atTask(b, "t1"));
      const stale = await claimOrFail(backend, a, "t1", "worker-1");
      await backend.releaseTaskClaim(a, "t1", "worker-1");
      const live = await claimOrFail(backend, a, "t1", "worker-2");
      const good = await claimOrFail(backend, b, "t1", "worker-1");
      const outcomes = await backend.completeTasks([
        { claim: stale, output: text("stale") },
        { claim: good, output: text("good") },
      ]);
      expect(outcomes[0]).toBeInstanceOf(PersistenceError);
      expect(outcomes[0]).toMatchObject({ code: ErrorCode.ClaimLost });
      expect(outcomes[1]).toBeNull();
      expect(await resultOf(backend, a, "t1")).toBeUndefined();
      expect(await resultOf(backend, b, "t1")).toBe("good");
      // The stale completion released nothing: worker-2 still holds the task and finishes it.
      expect(await isHeld(backend, a, "t1")).toBe(true);
      expect(await backend.completeTasks([{ claim: live, output: text("live") }])).toEqual([null]);
      expect(await resultOf(backend, a, "t1")).toBe("live");
    });

    it("a completed claim fences nothing afterwards; completing it twice is ClaimLostError", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "worker-1");
      expect(await backend.completeTasks([{ claim, output: text("first") }])).toEqual([null]);
      expect(await backend.completeTasks([{ claim, output: text("again") }])).toEqual([
        expect.objectContaining({ code: ErrorCode.ClaimLost }),
      ]);
      expect(await rejection(backend.saveTaskResult(id, "t1", text("late"), { claim }))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(await resultOf(backend, id, "t1")).toBe("first");
    });

    it("an expired claim is refused (ClaimLostError) and nothing is written", async () => {
      const { backend } = await useSubject(options);
      const SKEW_MS = expirySlackMs(backend);
      const id = uid();
      const original = atTask(id, "t1");
      await backend.saveSnapshot(original);
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 150);
      await sleep(150 + SKEW_MS + 100);
      expect(await backend.completeTasks([{ claim, output: text("late") }])).toEqual([
        expect.objectContaining({ code: ErrorCode.ClaimLost }),
      ]);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(original));
    });

    it("a missing instance is NotFoundError and a finished one ConflictError; each writes nothing and keeps its claim", async () => {
      const { backend } = await useSubject(options);
      const missing = uid();
      const done = finished(uid(), { kind: "Completed", finalOutput: text("done") });
      await backend.saveSnapshot(done);
      const onMissing = await claimOrFail(backend, missing, "t1", "worker-1");
      const onDone = await claimOrFail(backend, done.instanceId, "t1", "worker-1");
      const outcomes = await backend.completeTasks([
        { claim: onMissing, output: text("x") },
        { claim: onDone, output: text("y") },
      ]);
      expect(outcomes).toEqual([
        expect.objectContaining({ code: ErrorCode.NotFound }),
        expect.objectContaining({ code: ErrorCode.Conflict }),
      ]);
      expect(await rejection(backend.loadSnapshot(missing))).toMatchObject({ code: ErrorCode.NotFound });
      expect(comparable(await backend.loadSnapshot(done.instanceId))).toEqual(comparable(done));
      expect(await isHeld(backend, missing, "t1")).toBe(true);
      expect(await isHeld(backend, done.instanceId, "t1")).toBe(true);
    });

    it("a missing instance is NotFoundError even when the claim is stale (saveTaskResult's precedence)", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const claim = await claimOrFail(backend, id, "t1", "worker-1");
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      expect(await backend.completeTasks([{ claim, output: text("x") }])).toEqual([
        expect.objectContaining({ code: ErrorCode.NotFound }),
      ]);
    });

    it("a bad item refuses the whole call before any I/O", async () => {
      const { backend } = await useSubject(options, { maxPayloadBytes: 1024 });
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "worker-1");
      const good = { claim, output: text("good") };
      const bad: unknown[] = [
        [good, { claim, output: "not bytes" }],
        [good, { claim: { ...claim, token: 0 }, output: text("x") }],
        [good, { claim: { ...claim, taskId: "" }, output: text("x") }],
        [good, { output: text("no claim") }],
        [good, null],
        [good, good],
        "not an array",
        Array.from({ length: MAX_LIMIT + 1 }, () => good),
      ];
      for (const completions of bad) {
        expect(
          await rejection(
            backend.completeTasks(completions as Parameters<PersistentBackend["completeTasks"]>[0]),
          ),
        ).toMatchObject({ code: ErrorCode.Validation });
      }
      expect(
        await rejection(backend.completeTasks([good, { claim, output: new Uint8Array(1025) }])),
      ).toMatchObject({ code: ErrorCode.PayloadTooLarge });
      expect(await resultOf(backend, id, "t1")).toBeUndefined();
      expect(await isHeld(backend, id, "t1")).toBe(true);
      expect(await backend.completeTasks([])).toEqual([]);
    });

    it("concurrent calls from several clients on the tasks of one instance all land", async () => {
      const { backend, connect } = await useSubject(options);
      const others = [await connect(), await connect()];
      const clients = [backend, ...others];
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t0"));
      const tasks = Array.from({ length: 24 }, (_, i) => `t${i}`);
      const claims = await Promise.all(tasks.map((t, i) => claimOrFail(backend, id, t, `worker-${i % 3}`)));
      await Promise.all(
        clients.map(async (client, k) => {
          const mine = claims.filter((_, i) => i % 3 === k);
          for (let i = 0; i < mine.length; i += 4) {
            const batch = mine.slice(i, i + 4);
            const outcomes = await client.completeTasks(
              batch.map((claim) => ({ claim, output: text(claim.taskId) })),
            );
            expect(outcomes).toEqual(batch.map(() => null));
          }
        }),
      );
      const loaded = await backend.loadSnapshot(id);
      if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
      expect(Object.keys(loaded.state.completedTasks).sort()).toEqual([...tasks].sort());
    });

    it("a closed backend refuses completeTasks with BackendError", async () => {
      const { backend } = await useSubject(options);
      await backend.close();
      expect(await rejection(backend.completeTasks([]))).toMatchObject({ code: ErrorCode.Backend });
    });
  });
}
