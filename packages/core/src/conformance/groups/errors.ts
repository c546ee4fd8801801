import { describe, expect, it } from "vitest";
import {
  BackendError,
  ClaimLostError,
  ConflictError,
  ErrorCode,
  NotFoundError,
  PayloadTooLargeError,
  PersistenceError,
  SerializationError,
  ValidationError,
} from "../../errors.js";
import { atTask, comparable, finished, inProgress } from "../fixtures.js";
import { rejection, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

export function errorsGroup(options: ConformanceOptions): void {
  describe("errors", () => {
    it("every failure is a PersistenceError subclass with its stable code", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const cases: Array<[unknown, new (...args: never[]) => PersistenceError, string]> = [
        [await rejection(backend.loadSnapshot(id)), NotFoundError, ErrorCode.NotFound],
        [await rejection(backend.loadSnapshot("")), ValidationError, ErrorCode.Validation],
      ];
      await backend.claimTask(id, "t", "w1", 60_000);
      cases.push([
        await rejection(backend.releaseTaskClaim(id, "t", "w2")),
        ClaimLostError,
        ErrorCode.ClaimLost,
      ]);
      await backend.saveSnapshot(finished(id, { kind: "Failed", error: "x" }));
      cases.push([await rejection(backend.saveSnapshot(atTask(id, "t"))), ConflictError, ErrorCode.Conflict]);
      for (const [error, type, code] of cases) {
        expect(error).toBeInstanceOf(type);
        expect(error).toBeInstanceOf(PersistenceError);
        expect(error).toBeInstanceOf(Error);
        expect((error as PersistenceError).code).toBe(code);
        expect((error as Error).name).toBe(type.name);
      }
    });

    it("a closed backend refuses work with BackendError; close is idempotent and async-disposable", async () => {
      const { backend } = await useSubject(options);
      await backend.close();
      await backend.close();
      await backend[Symbol.asyncDispose]();
      const error = await rejection(backend.listSnapshots());
      expect(error).toBeInstanceOf(BackendError);
      expect(error).toMatchObject({ code: ErrorCode.Backend });
    });

    it("a corrupt stored record gives SerializationError naming the instance; others still load", async (ctx) => {
      const { backend, corruptSnapshot } = await useSubject(options);
      if (corruptSnapshot === undefined) return ctx.skip("the subject gives no corruptSnapshot hook");
      const bad = uid("bad");
      const good = uid("good");
      await backend.saveSnapshot(atTask(bad, "t1", { completed: { t0: text("zero") } }));
      await backend.saveSnapshot(inProgress(good));
      await corruptSnapshot(bad);
      const error = await rejection(backend.loadSnapshot(bad));
      expect(error).toBeInstanceOf(SerializationError);
      expect(error).toMatchObject({ code: ErrorCode.Serialization });
      expect((error as Error).message).toContain(bad);
      expect((await backend.loadSnapshot(good)).instanceId).toBe(good);
      expect([...(await backend.listSnapshots())].sort()).toEqual([bad, good].sort());
      await backend.deleteSnapshot(bad);
      expect(await backend.listSnapshots()).toEqual([good]);
    });

    it("a payload over the configured maximum gives PayloadTooLargeError and writes nothing", async () => {
      const { backend } = await useSubject(options, { maxPayloadBytes: 1024 });
      const id = uid();
      const big = new Uint8Array(1025);
      const fits = new Uint8Array(1024).fill(7);
      const cases = [
        inProgress(id, { initialInput: big }),
        inProgress(id, { completed: { a: big } }),
        finished(id, { kind: "Completed", finalOutput: big }),
        finished(id, { kind: "Failed", error: "e".repeat(1025) }),
      ];
      for (const snapshot of cases) {
        expect(await rejection(backend.saveSnapshot(snapshot))).toMatchObject({
          code: ErrorCode.PayloadTooLarge,
        });
      }
      expect(await backend.listSnapshots()).toEqual([]);
      const stored = atTask(id, "t1", { initialInput: fits });
      await backend.saveSnapshot(stored);
      const error = await rejection(backend.saveTaskResult(id, "t1", big));
      expect(error).toBeInstanceOf(PayloadTooLargeError);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(stored));
      await backend.saveTaskResult(id, "t1", fits);
    });
  });
}
