import { describe, expect, it } from "vitest";
import { bytesEqual } from "../../bytes.js";
import { ErrorCode } from "../../errors.js";
import type { ExecutionPosition, WorkflowSnapshot } from "../../snapshot.js";
import { atTask, comparable, finished, inProgress } from "../fixtures.js";
import { allByteValues, rejection, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

export function snapshotsGroup(options: ConformanceOptions): void {
  describe("snapshots", () => {
    const positions: ExecutionPosition[] = [
      { kind: "NotStarted" },
      { kind: "AtTask", taskId: "step-1" },
      { kind: "AtFork", branchId: "fork-a", completedBranches: [] },
      { kind: "AtFork", branchId: "fork-b", completedBranches: ["x", "y"] },
      { kind: "AtJoin", joinId: "join-1", completedBranches: ["left", "right"] },
    ];
    for (const position of positions) {
      it(`round-trips an InProgress snapshot at ${position.kind} ${JSON.stringify(position)}`, async () => {
        const { backend } = await useSubject(options);
        const snapshot = inProgress(uid(), {
          position,
          completed: { a: text("first"), b: new Uint8Array(0), c: allByteValues() },
          last: "c",
          initialInput: allByteValues(),
        });
        await backend.saveSnapshot(snapshot);
        expect(comparable(await backend.loadSnapshot(snapshot.instanceId))).toEqual(comparable(snapshot));
      });
    }

    it("round-trips Completed and Failed states, empty and all-256 byte values", async () => {
      const { backend } = await useSubject(options);
      const cases: WorkflowSnapshot[] = [
        finished(uid(), { kind: "Completed", finalOutput: allByteValues() }),
        finished(uid(), { kind: "Completed", finalOutput: new Uint8Array(0) }),
        finished(uid(), { kind: "Failed", error: "boom: ünïcödé ✓ \n\t 'quotes' \"double\"" }),
        finished(uid(), { kind: "Failed", error: "" }),
      ];
      for (const snapshot of cases) {
        await backend.saveSnapshot(snapshot);
        expect(comparable(await backend.loadSnapshot(snapshot.instanceId))).toEqual(comparable(snapshot));
      }
    });

    it("keeps an absent initialInput absent and an empty one empty", async () => {
      const { backend } = await useSubject(options);
      const absent = inProgress(uid());
      const empty = inProgress(uid(), { initialInput: new Uint8Array(0) });
      await backend.saveSnapshot(absent);
      await backend.saveSnapshot(empty);
      expect((await backend.loadSnapshot(absent.instanceId)).initialInput).toBeUndefined();
      const loaded = await backend.loadSnapshot(empty.instanceId);
      expect(loaded.initialInput).toBeInstanceOf(Uint8Array);
      expect(loaded.initialInput?.byteLength).toBe(0);
    });

    it("stores the initial input once, beside the header: replaced, removed and read by discovery like the snapshot says", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const inputOf = async (): Promise<number[] | undefined> => {
        const found = await backend.findAvailableTasks("worker-1", 100);
        const task = found.find((t) => t.instanceId === id);
        return task === undefined ? undefined : Array.from(task.input);
      };
      await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("first") }));
      expect(await inputOf()).toEqual(Array.from(text("first")));
      // A new snapshot with another input replaces it everywhere (stored value and discovery).
      await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("second") }));
      expect(Array.from((await backend.loadSnapshot(id)).initialInput ?? [])).toEqual(
        Array.from(text("second")),
      );
      expect(await inputOf()).toEqual(Array.from(text("second")));
      // A snapshot without one removes it: nothing of the old value survives anywhere.
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(Object.hasOwn(await backend.loadSnapshot(id), "initialInput")).toBe(false);
      expect(await inputOf()).toEqual([]);
      // A task result does not touch it; once a task completed, discovery reads that output instead.
      await backend.saveSnapshot(atTask(id, "t2", { initialInput: text("third") }));
      await backend.saveTaskResult(id, "t1", text("one"));
      const loaded = await backend.loadSnapshot(id);
      expect(Array.from(loaded.initialInput ?? [])).toEqual(Array.from(text("third")));
      expect(await inputOf()).toEqual(Array.from(text("one")));
    });

    it("accepts Buffer input and returns plain Uint8Arrays", async () => {
      const { backend } = await useSubject(options);
      const snapshot = inProgress(uid(), {
        completed: { a: Buffer.from("out") },
        initialInput: Buffer.from([1, 2, 3]),
      });
      await backend.saveSnapshot(snapshot);
      const loaded = await backend.loadSnapshot(snapshot.instanceId);
      expect(Object.getPrototypeOf(loaded.initialInput)).toBe(Uint8Array.prototype);
      const out = loaded.state.kind === "InProgress" ? loaded.state.completedTasks.a?.output : undefined;
      expect(out && Object.getPrototypeOf(out)).toBe(Uint8Array.prototype);
      expect(Array.from(out ?? [])).toEqual(Array.from(Buffer.from("out")));
      expect(JSON.stringify(loaded.initialInput)).toBe(JSON.stringify(new Uint8Array([1, 2, 3])));
    });

    it("stores a copy: changing the caller's bytes after saving changes nothing stored", async () => {
      const { backend } = await useSubject(options);
      const input = Uint8Array.from([1, 2, 3]);
      const snapshot = inProgress(uid(), { initialInput: input });
      await backend.saveSnapshot(snapshot);
      input[0] = 99;
      expect(Array.from((await backend.loadSnapshot(snapshot.instanceId)).initialInput ?? [])).toEqual([
        1, 2, 3,
      ]);
    });

    it("overwrites: the last save wins, including fewer completed tasks", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(
        atTask(id, "t2", { completed: { t1: text("one"), t0: text("zero") }, last: "t1" }),
      );
      const second = atTask(id, "t3", {
        completed: { t1: text("one-again") },
        last: "t1",
        updatedAt: 1_700_000_000_500,
      });
      await backend.saveSnapshot(second);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(second));
    });

    it("loadSnapshot and deleteSnapshot of a missing instance give NotFoundError", async () => {
      const { backend } = await useSubject(options);
      expect(await rejection(backend.loadSnapshot(uid()))).toMatchObject({ code: ErrorCode.NotFound });
      expect(await rejection(backend.deleteSnapshot(uid()))).toMatchObject({ code: ErrorCode.NotFound });
    });

    it("deleteSnapshot removes the snapshot, its task results and its claims", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      await backend.saveTaskResult(id, "t2", text("two"));
      expect(await backend.claimTask(id, "t3", "worker-1", 60_000)).not.toBeNull();
      await backend.deleteSnapshot(id);
      expect(await rejection(backend.loadSnapshot(id))).toMatchObject({ code: ErrorCode.NotFound });
      expect(await backend.listSnapshots()).not.toContain(id);
      // The claim went with the snapshot: another worker can claim at once.
      expect(await backend.claimTask(id, "t3", "worker-2", 60_000)).not.toBeNull();
      // A re-created instance starts with no results of the deleted one.
      await backend.saveSnapshot(atTask(id, "t1"));
      const reloaded = await backend.loadSnapshot(id);
      expect(reloaded.state.kind === "InProgress" && Object.keys(reloaded.state.completedTasks)).toEqual([]);
    });

    it("listSnapshots returns every stored id, and the paged form walks each exactly once", async () => {
      const { backend } = await useSubject(options);
      const ids = Array.from({ length: 23 }, (_, i) => uid(`list-${i}`));
      ids.push("a:b", "a", "x' OR 1=1 --", "{tag}", "$gt", "ünï-✓-🚀");
      for (const id of ids) await backend.saveSnapshot(inProgress(id));
      expect([...(await backend.listSnapshots())].sort()).toEqual([...ids].sort());
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: Awaited<ReturnType<typeof backend.listSnapshotsPage>> = await backend.listSnapshotsPage({
          cursor,
          limit: 5,
        });
        expect(page.instanceIds.length).toBeLessThanOrEqual(5);
        seen.push(...page.instanceIds);
        cursor = page.nextCursor;
        pages++;
        expect(pages).toBeLessThan(50);
      } while (cursor !== null);
      expect(seen.sort()).toEqual([...ids].sort());
      await backend.deleteSnapshot(ids[0] as string);
      expect(await backend.listSnapshots()).not.toContain(ids[0]);
    });

    it("an empty store lists nothing", async () => {
      const { backend } = await useSubject(options);
      expect(await backend.listSnapshots()).toEqual([]);
      expect(await backend.listSnapshotsPage({ limit: 10 })).toEqual({ instanceIds: [], nextCursor: null });
    });

    it("refuses to turn a Completed or Failed snapshot back into InProgress (ConflictError, unchanged)", async () => {
      const { backend } = await useSubject(options);
      for (const state of [
        { kind: "Completed" as const, finalOutput: text("done") },
        { kind: "Failed" as const, error: "nope" },
      ]) {
        const done = finished(uid(), state);
        await backend.saveSnapshot(done);
        const error = await rejection(backend.saveSnapshot(atTask(done.instanceId, "t1")));
        expect(error).toMatchObject({ code: ErrorCode.Conflict });
        expect(comparable(await backend.loadSnapshot(done.instanceId))).toEqual(comparable(done));
        // Overwriting a finished snapshot with another finished one is allowed.
        const again = finished(done.instanceId, { kind: "Completed", finalOutput: text("final") });
        await backend.saveSnapshot(again);
        expect(comparable(await backend.loadSnapshot(done.instanceId))).toEqual(comparable(again));
      }
    });

    it("byte values are compared exactly, not by text", async () => {
      const { backend } = await useSubject(options);
      const tricky = Uint8Array.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x0d, 0x0a]);
      const snapshot = finished(uid(), { kind: "Completed", finalOutput: tricky });
      await backend.saveSnapshot(snapshot);
      const loaded = await backend.loadSnapshot(snapshot.instanceId);
      expect(loaded.state.kind === "Completed" && bytesEqual(loaded.state.finalOutput, tricky)).toBe(true);
    });
  });
}
