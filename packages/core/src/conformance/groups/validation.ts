import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import { ErrorCode } from "../../errors.js";
import { MAX_DURATION_MS, MAX_LIMIT } from "../../validation.js";
import { atTask, comparable, inProgress } from "../fixtures.js";
import { rejection, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const BAD_IDS: unknown[] = [
  "",
  "x".repeat(513),
  "a\u0000b",
  "\uD800",
  "a\uDC00b",
  42,
  null,
  undefined,
  { $gt: "" },
  ["a"],
];
const BAD_LIMITS: unknown[] = [
  0,
  -1,
  1.5,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  "5",
  MAX_LIMIT + 1,
  null,
  undefined,
];
const BAD_DURATIONS: unknown[] = [
  0,
  -1,
  1.5,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  "100",
  MAX_DURATION_MS + 1,
];
const HOSTILE_IDS = [
  "$gt",
  '{"$gt": ""}',
  "x' OR 1=1 --",
  "'; DROP TABLE snapshots; --",
  "{tag}",
  "{",
  "}",
  "a.b.c",
  "$where",
  "__proto__",
  "constructor",
  "hasOwnProperty",
  "%_*?[]",
  "line\nbreak\ttab\r",
  "\\backslash\\",
  "ünïcödé-✓-🚀-日本",
  " leading and trailing ",
  "€".repeat(512),
  "🚀".repeat(256),
  "x".repeat(512),
];

type AnyBackend = { [K in keyof PersistentBackend]: (...args: unknown[]) => Promise<unknown> };

/** Every operation, with one argument replaced by `bad`. */
function callsWith(b: AnyBackend, bad: unknown): Array<[string, () => Promise<unknown>]> {
  const bytes = text("x");
  return [
    ["saveSnapshot(instanceId)", () => b.saveSnapshot({ ...inProgress("ok"), instanceId: bad })],
    ["saveTaskResult(instanceId)", () => b.saveTaskResult(bad, "t", bytes)],
    ["saveTaskResult(taskId)", () => b.saveTaskResult("ok", bad, bytes)],
    ["loadSnapshot", () => b.loadSnapshot(bad)],
    ["deleteSnapshot", () => b.deleteSnapshot(bad)],
    ["claimTask(instanceId)", () => b.claimTask(bad, "t", "w", 1000)],
    ["claimTask(taskId)", () => b.claimTask("ok", bad, "w", 1000)],
    ["claimTask(workerId)", () => b.claimTask("ok", "t", bad, 1000)],
    ["releaseTaskClaim(instanceId)", () => b.releaseTaskClaim(bad, "t", "w")],
    ["releaseTaskClaim(taskId)", () => b.releaseTaskClaim("ok", bad, "w")],
    ["releaseTaskClaim(workerId)", () => b.releaseTaskClaim("ok", "t", bad)],
    ["extendTaskClaim(instanceId)", () => b.extendTaskClaim(bad, "t", "w", 1000)],
    ["extendTaskClaim(taskId)", () => b.extendTaskClaim("ok", bad, "w", 1000)],
    ["extendTaskClaim(workerId)", () => b.extendTaskClaim("ok", "t", bad, 1000)],
    ["findAvailableTasks(workerId)", () => b.findAvailableTasks(bad, 10)],
    ["claimAvailableTasks(workerId)", () => b.claimAvailableTasks(bad, 10, 1000)],
    ["saveSnapshot(position taskId)", () => b.saveSnapshot(atTask("ok", bad as string))],
  ];
}

async function expectNothingStored(backend: PersistentBackend): Promise<void> {
  expect(await backend.listSnapshots()).toEqual([]);
  expect(await backend.claimTask("ok", "t", "probe", 1000)).not.toBeNull();
}

export function validationGroup(options: ConformanceOptions): void {
  describe("validation", () => {
    it("every invalid id gives ValidationError in every operation, and nothing is stored", async () => {
      const { backend } = await useSubject(options);
      const b = backend as unknown as AnyBackend;
      for (const bad of BAD_IDS) {
        for (const [name, call] of callsWith(b, bad)) {
          const error = await rejection(call());
          expect(error, `${name} with ${JSON.stringify(bad)}`).toMatchObject({ code: ErrorCode.Validation });
        }
      }
      await expectNothingStored(backend);
    });

    it("validation happens before any I/O: a closed backend still answers ValidationError", async () => {
      const { backend } = await useSubject(options);
      await backend.close();
      const b = backend as unknown as AnyBackend;
      for (const [name, call] of callsWith(b, "")) {
        expect(await rejection(call()), name).toMatchObject({ code: ErrorCode.Validation });
      }
      expect(await rejection(backend.loadSnapshot("fine"))).toMatchObject({ code: ErrorCode.Backend });
    });

    it("limits and durations must be positive integers within range", async () => {
      const { backend } = await useSubject(options);
      const b = backend as unknown as AnyBackend;
      for (const bad of BAD_LIMITS) {
        for (const call of [
          () => b.findAvailableTasks("w", bad),
          () => b.claimAvailableTasks("w", bad, 1000),
          () => b.listSnapshotsPage({ limit: bad }),
        ]) {
          expect(await rejection(call()), `limit ${String(bad)}`).toMatchObject({
            code: ErrorCode.Validation,
          });
        }
      }
      for (const bad of BAD_DURATIONS) {
        for (const call of [
          () => b.claimTask("ok", "t", "w", bad),
          () => b.extendTaskClaim("ok", "t", "w", bad),
          () => b.claimAvailableTasks("w", 1, bad),
        ]) {
          expect(await rejection(call()), `duration ${String(bad)}`).toMatchObject({
            code: ErrorCode.Validation,
          });
        }
      }
      expect(await rejection(b.extendTaskClaim("ok", "t", "w", undefined))).toMatchObject({
        code: ErrorCode.Validation,
      });
      expect(await rejection(b.listSnapshotsPage({ limit: 5, cursor: 17 }))).toMatchObject({
        code: ErrorCode.Validation,
      });
      await expectNothingStored(backend);
    });

    it("malformed snapshots and payloads from untyped callers give ValidationError", async () => {
      const { backend } = await useSubject(options);
      const b = backend as unknown as AnyBackend;
      const good = inProgress("ok", { completed: { a: text("a") } });
      const bad: unknown[] = [
        null,
        "snapshot",
        {},
        { ...good, state: undefined },
        { ...good, state: { kind: "Bogus" } },
        { ...good, state: { ...good.state, position: { kind: "Nowhere" } } },
        { ...good, state: { ...good.state, completedTasks: { a: { taskId: "b", output: text("x") } } } },
        { ...good, state: { ...good.state, completedTasks: { a: { taskId: "a", output: "text" } } } },
        { ...good, state: { ...good.state, lastCompletedTaskId: "missing" } },
        { ...good, state: { kind: "Completed", finalOutput: [1, 2, 3] } },
        { ...good, state: { kind: "Failed", error: 42 } },
        { ...good, createdAt: -1 },
        { ...good, updatedAt: 1.5 },
        { ...good, createdAt: "yesterday" },
        { ...good, initialInput: "text" },
        { ...good, initialInput: new ArrayBuffer(4) },
        { ...good, definitionHash: 7 },
        { ...good, definitionHash: "a\u0000b" },
        { ...good, definitionHash: "\uD800" },
        { ...good, definitionHash: "h".repeat(4097) },
        { ...good, state: { ...good.state, position: { kind: "AwaitingEvent", nextTaskId: "t" } } },
        {
          ...good,
          state: { ...good.state, position: { kind: "AwaitingEvent", eventName: "", nextTaskId: "t" } },
        },
        {
          ...good,
          state: {
            ...good.state,
            position: { kind: "AwaitingEvent", eventName: "e", nextTaskId: "t", timeoutAt: -5 },
          },
        },
        { ...good, state: { ...good.state, kind: "Paused", pausedAt: 1, reason: 3, requestedBy: null } },
        { ...good, state: { ...good.state, kind: "Paused", reason: null, requestedBy: null } },
        {
          ...good,
          state: { kind: "Cancelled", cancelledAt: 1, completedTasks: {}, interruptedAtTaskId: "" },
        },
        { ...good, state: { kind: "Cancelled", cancelledAt: "now", completedTasks: {} } },
      ];
      for (const snapshot of bad) {
        expect(await rejection(b.saveSnapshot(snapshot)), JSON.stringify(snapshot)).toMatchObject({
          code: ErrorCode.Validation,
        });
      }
      for (const output of ["text", [1, 2], null, undefined, {}, new ArrayBuffer(2), 7]) {
        expect(await rejection(b.saveTaskResult("ok", "t", output))).toMatchObject({
          code: ErrorCode.Validation,
        });
      }
      await expectNothingStored(backend);
    });

    it("hostile and maximal ids are just ids: they round-trip through every operation", async () => {
      const { backend } = await useSubject(options);
      for (const [i, id] of HOSTILE_IDS.entries()) {
        const taskId = HOSTILE_IDS[(i + 1) % HOSTILE_IDS.length] as string;
        const workerId = HOSTILE_IDS[(i + 2) % HOSTILE_IDS.length] as string;
        const snapshot = atTask(id, taskId, { initialInput: text(id), updatedAt: 1_700_000_000_000 + i });
        await backend.saveSnapshot(snapshot);
        expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(snapshot));
        const claim = await backend.claimTask(id, taskId, workerId, 60_000);
        expect(claim).toMatchObject({ instanceId: id, taskId, workerId });
        await backend.extendTaskClaim(id, taskId, workerId, 60_000);
        await backend.saveTaskResult(id, taskId, text(taskId), { claim: claim ?? 0 });
        await backend.releaseTaskClaim(id, taskId, workerId);
      }
      expect([...(await backend.listSnapshots())].sort()).toEqual([...HOSTILE_IDS].sort());
      for (const id of HOSTILE_IDS) {
        const loaded = await backend.loadSnapshot(id);
        expect(loaded.instanceId).toBe(id);
      }
      // Move every instance to a fresh ready task; discovery and claim-next return the ids exactly.
      for (const [i, id] of HOSTILE_IDS.entries()) {
        await backend.saveSnapshot(atTask(id, `next-${i}`, { updatedAt: 1_700_000_001_000 + i }));
      }
      const found = await backend.findAvailableTasks("w", 100);
      expect(found.map((t) => [t.instanceId, t.taskId])).toEqual(
        HOSTILE_IDS.map((id, i) => [id, `next-${i}`]),
      );
      const claimed = await backend.claimAvailableTasks(HOSTILE_IDS[0] as string, 100, 60_000);
      expect(claimed.map((t) => t.instanceId)).toEqual(HOSTILE_IDS);
      for (const id of HOSTILE_IDS) await backend.deleteSnapshot(id);
      expect(await backend.listSnapshots()).toEqual([]);
    });

    it("an id of 512 characters is accepted, 513 is not", async () => {
      const { backend } = await useSubject(options);
      const id = uid().padEnd(512, "é");
      await backend.saveSnapshot(inProgress(id));
      expect((await backend.loadSnapshot(id)).instanceId).toBe(id);
      expect(await rejection(backend.loadSnapshot(`${id}é`))).toMatchObject({ code: ErrorCode.Validation });
    });
  });
}
