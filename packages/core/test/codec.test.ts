import { describe, expect, it } from "vitest";
import {
  createSnapshot,
  decodeSnapshot,
  decodeSnapshotHeader,
  ErrorCode,
  encodeSnapshot,
  encodeSnapshotHeader,
  FORMAT_VERSION,
  markCancelled,
  markCompleted,
  markFailed,
  markPaused,
  markResumed,
  markTaskCompleted,
  SerializationError,
  updatePosition,
  type WorkflowSnapshot,
} from "../src/index.js";

const bytes = (...values: number[]) => Uint8Array.from(values);
const all256 = Uint8Array.from({ length: 256 }, (_, i) => i);

function sample(): WorkflowSnapshot {
  let s = createSnapshot("wf-1", "hash", { initialInput: all256, now: 1000 });
  s = markTaskCompleted(s, "a", bytes(1, 2, 3), 1001);
  s = markTaskCompleted(s, "b", new Uint8Array(0), 1002);
  return updatePosition(s, { kind: "AtFork", branchId: "f", completedBranches: ["x"] }, 1003);
}

describe("snapshot codec", () => {
  it("round-trips every state with exact bytes", () => {
    for (const s of [sample(), markCompleted(sample(), all256), markFailed(sample(), "ünï ✓")]) {
      expect(decodeSnapshot(encodeSnapshot(s), s.instanceId)).toEqual(s);
    }
  });

  it("round-trips a header without task results, joined with results stored apart", () => {
    const s = sample();
    const header = encodeSnapshotHeader(s);
    expect(header.byteLength).toBeLessThan(encodeSnapshot(s).byteLength);
    const state = s.state.kind === "InProgress" ? s.state : undefined;
    const joined = decodeSnapshotHeader(header, "wf-1", {
      results: Object.values(state?.completedTasks ?? {}),
      lastCompletedTaskId: "b",
      updatedAt: 5000,
    });
    expect(joined).toEqual({ ...s, updatedAt: 5000 });
  });

  it("returns plain Uint8Arrays even when decoding from a Buffer", () => {
    const decoded = decodeSnapshot(Buffer.from(encodeSnapshot(sample())), "wf-1");
    expect(Object.getPrototypeOf(decoded.initialInput)).toBe(Uint8Array.prototype);
  });

  it("gives SerializationError naming the instance for undecodable data, never a TypeError", () => {
    const good = encodeSnapshot(sample());
    const corrupt: Uint8Array[] = [
      new Uint8Array(0),
      bytes(1, 2, 3),
      new TextEncoder().encode('{"json": true}'),
      good.subarray(0, good.byteLength - 1),
      good.subarray(0, 12),
      Uint8Array.from(good).fill(0xff, 8, 20),
    ];
    for (const data of corrupt) {
      const error = (() => {
        try {
          decodeSnapshot(data, "wf-1");
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(SerializationError);
      expect((error as SerializationError).code).toBe(ErrorCode.Serialization);
      expect((error as Error).message).toContain("wf-1");
    }
  });

  it("refuses a record of another instance and an unknown format version", () => {
    const good = encodeSnapshot(sample());
    expect(() => decodeSnapshot(good, "other")).toThrow(SerializationError);
    const future = Uint8Array.from(good);
    future[3] = FORMAT_VERSION + 1;
    expect(() => decodeSnapshot(future, "wf-1")).toThrow(/format version/);
  });

  it("refuses structurally wrong headers", () => {
    const craft = (header: unknown) => {
      const json = new TextEncoder().encode(JSON.stringify(header));
      const out = new Uint8Array(8 + json.byteLength);
      out.set([0x53, 0x59, 0x52, FORMAT_VERSION]);
      new DataView(out.buffer).setUint32(4, json.byteLength);
      out.set(json, 8);
      return out;
    };
    const base = { i: "wf-1", d: "h", c: 1, u: 2 };
    for (const header of [
      null,
      [],
      { ...base, s: { k: "Nope" } },
      { ...base, s: { k: "Completed", o: 3 } },
      { ...base, s: { k: "InProgress", p: { kind: "AtTask" }, t: [], l: null } },
      { ...base, s: { k: "InProgress", p: { kind: "NotStarted" }, t: [], l: "ghost" } },
      { ...base, c: -1, s: { k: "Failed", e: "x" } },
    ]) {
      expect(() => decodeSnapshot(craft(header), "wf-1")).toThrow(SerializationError);
    }
  });
});

describe("snapshot codec, version 2: control states and event waits", () => {
  const waiting = () =>
    updatePosition(
      sample(),
      { kind: "AwaitingEvent", eventName: "approval", nextTaskId: "c", timeoutAt: 5000 },
      1004,
    );

  it("round-trips Paused, Cancelled and AwaitingEvent, whole and split", () => {
    const cases = [
      waiting(),
      updatePosition(
        sample(),
        { kind: "AwaitingEvent", eventName: "e", nextTaskId: "c", timeoutAt: null },
        1004,
      ),
      markPaused(waiting(), { reason: "incident 42", requestedBy: "ops" }, 1005),
      markPaused(sample(), {}, 1005),
      markCancelled(waiting(), { reason: null, requestedBy: "alice" }, 1006),
      markCancelled(markPaused(sample(), {}, 1005), {}, 1006),
    ];
    for (const s of cases) {
      expect(decodeSnapshot(encodeSnapshot(s), s.instanceId)).toEqual(s);
      const state = s.state;
      const results = "completedTasks" in state ? Object.values(state.completedTasks) : [];
      const last = "lastCompletedTaskId" in state ? state.lastCompletedTaskId : null;
      expect(
        decodeSnapshotHeader(encodeSnapshotHeader(s), s.instanceId, { results, lastCompletedTaskId: last }),
      ).toEqual(s);
    }
  });

  it("markCancelled names the interrupted task, markResumed restores the position", () => {
    const cancelled = markCancelled(waiting(), {}, 2000);
    expect(cancelled.state).toMatchObject({ kind: "Cancelled", interruptedAtTaskId: "c", cancelledAt: 2000 });
    const paused = markPaused(waiting(), { reason: "r" }, 2000);
    expect(markResumed(paused, 3000).state).toEqual(waiting().state);
  });

  it("still reads version-1 records, and refuses version-2 kinds in them", () => {
    const v1 = encodeSnapshot(sample());
    v1[3] = 1;
    expect(decodeSnapshot(v1, "wf-1")).toEqual(sample());
    for (const s of [waiting(), markPaused(sample(), {}, 1005)]) {
      const bad = encodeSnapshot(s);
      bad[3] = 1;
      expect(() => decodeSnapshot(bad, "wf-1")).toThrow(SerializationError);
    }
  });
});

describe("snapshot codec: the version written", () => {
  it("writes version 1 unless the snapshot needs version 2, so older readers keep reading it", () => {
    expect(encodeSnapshot(sample())[3]).toBe(1);
    expect(encodeSnapshotHeader(markCompleted(sample(), all256))[3]).toBe(1);
    expect(encodeSnapshot(markPaused(sample(), {}, 5))[3]).toBe(2);
    expect(encodeSnapshot(markCancelled(sample(), {}, 5))[3]).toBe(2);
    const waiting = updatePosition(
      sample(),
      { kind: "AwaitingEvent", eventName: "e", nextTaskId: "c", timeoutAt: null },
      5,
    );
    expect(encodeSnapshotHeader(waiting)[3]).toBe(2);
  });
});
