import { describe, expect, it } from "vitest";
import {
  connectionSecrets,
  consumeRefusal,
  controlRefusal,
  extendRefusal,
  fromStoredParts,
  isMigratable,
  RETRY,
  releaseRefusal,
  resultRefusal,
  retryOnRace,
  snapshotRefusal,
  toStoredSnapshot,
  transitionHeader,
} from "../src/adapter/index.js";
import {
  createSnapshot,
  ErrorCode,
  markCompleted,
  markTaskCompleted,
  type PersistentBackend,
  updatePosition,
} from "../src/index.js";

const text = (s: string) => new TextEncoder().encode(s);

describe("stored form", () => {
  it("splits a snapshot into index fields, a header without the initial input, and results", () => {
    let s = createSnapshot("wf-1", "hash", { initialInput: text("in"), now: 1_000 });
    s = markTaskCompleted(s, "a", text("A"), 2_000);
    s = updatePosition(s, { kind: "AtTask", taskId: "b" }, 3_000);
    const stored = toStoredSnapshot(s);
    expect(stored).toMatchObject({
      instanceId: "wf-1",
      definitionHash: "hash",
      status: "InProgress",
      finished: false,
      positionTaskId: "b",
      readyTaskId: "b",
      lastCompletedTaskId: "a",
      createdAt: 1_000,
      updatedAt: 3_000,
    });
    expect(stored.initialInput).toEqual(text("in"));
    expect(stored.results).toEqual([{ taskId: "a", output: text("A") }]);
    // The header carries neither the input nor the outputs.
    const header = new TextDecoder().decode(stored.header);
    expect(header).not.toContain('"in":');
    expect(header).not.toContain('"t":');
    const back = fromStoredParts({
      instanceId: "wf-1",
      header: stored.header,
      initialInput: stored.initialInput,
      results: stored.results,
      lastCompletedTaskId: stored.lastCompletedTaskId,
    });
    expect(back).toEqual(s);
  });

  it("a position task that already has a result is not ready; a finished snapshot has no results", () => {
    let s = createSnapshot("wf-2", "hash", { now: 1 });
    s = markTaskCompleted(s, "a", text("A"), 2);
    s = updatePosition(s, { kind: "AtTask", taskId: "a" }, 3);
    expect(toStoredSnapshot(s)).toMatchObject({ positionTaskId: "a", readyTaskId: null });
    const done = toStoredSnapshot(markCompleted(s, text("out"), 4));
    expect(done).toMatchObject({ status: "Completed", finished: true, results: [], readyTaskId: null });
    expect(done.initialInput).toBeNull();
  });

  it("an empty initial input is a value, not an absence", () => {
    const s = createSnapshot("wf-3", "hash", { initialInput: new Uint8Array(0), now: 1 });
    const stored = toStoredSnapshot(s);
    expect(stored.initialInput).toEqual(new Uint8Array(0));
    const back = fromStoredParts({ ...stored, results: [] });
    expect(back.initialInput).toEqual(new Uint8Array(0));
    const none = fromStoredParts({
      ...toStoredSnapshot(createSnapshot("wf-3", "h", { now: 1 })),
      results: [],
    });
    expect(Object.hasOwn(none, "initialInput")).toBe(false);
  });
});

describe("refusals", () => {
  const claim = { token: 7, expiresAt: 10_000 };
  const fence = { taskId: "t", token: 7 };

  it("result writes: not found, then claim lost, then finished", () => {
    const base = { found: true, finished: false, claim, now: 5_000 };
    expect(resultRefusal("i", fence, base)).toBeNull();
    expect(resultRefusal("i", fence, { ...base, found: false, finished: true })?.code).toBe(
      ErrorCode.NotFound,
    );
    expect(resultRefusal("i", { ...fence, token: 6 }, { ...base, finished: true })?.code).toBe(
      ErrorCode.ClaimLost,
    );
    expect(resultRefusal("i", fence, { ...base, now: 10_000 })?.code).toBe(ErrorCode.ClaimLost);
    expect(resultRefusal("i", fence, { ...base, claim: undefined })?.code).toBe(ErrorCode.ClaimLost);
    expect(resultRefusal("i", fence, { ...base, finished: true })?.code).toBe(ErrorCode.Conflict);
    expect(resultRefusal("i", undefined, { ...base, claim: undefined })).toBeNull();
  });

  it("snapshot writes: claim lost, then a finished workflow reopened, then a paused one moved on", () => {
    const view = { found: true, finished: true, claim, now: 5_000 };
    expect(snapshotRefusal("i", fence, view, "InProgress")?.code).toBe(ErrorCode.Conflict);
    expect(snapshotRefusal("i", fence, view, "Paused")?.code).toBe(ErrorCode.Conflict);
    expect(snapshotRefusal("i", fence, view, "Completed")).toBeNull();
    expect(snapshotRefusal("i", { ...fence, token: 8 }, view, "Completed")?.code).toBe(ErrorCode.ClaimLost);
    expect(snapshotRefusal("i", undefined, { ...view, found: false }, "InProgress")).toBeNull();
    const paused = { found: true, finished: false, paused: true, claim, now: 5_000 };
    expect(snapshotRefusal("i", fence, paused, "InProgress")?.code).toBe(ErrorCode.Conflict);
    expect(snapshotRefusal("i", fence, paused, "Completed")?.code).toBe(ErrorCode.Conflict);
    expect(snapshotRefusal("i", fence, paused, "Paused")).toBeNull();
    expect(snapshotRefusal("i", fence, paused, "Cancelled")).toBeNull();
  });

  it("control operations and events: missing, then the state each one needs", () => {
    expect(controlRefusal("cancel", "i", undefined)?.code).toBe(ErrorCode.NotFound);
    expect(controlRefusal("cancel", "i", "Paused")).toBeNull();
    expect(controlRefusal("cancel", "i", "Cancelled")?.code).toBe(ErrorCode.Conflict);
    expect(controlRefusal("pause", "i", "InProgress")).toBeNull();
    expect(controlRefusal("pause", "i", "Paused")?.code).toBe(ErrorCode.Conflict);
    expect(controlRefusal("resume", "i", "Paused")).toBeNull();
    expect(controlRefusal("resume", "i", "InProgress")?.code).toBe(ErrorCode.Conflict);
    expect(controlRefusal("sendEvent", "i", "Paused")).toBeNull();
    expect(controlRefusal("sendEvent", "i", "Failed")?.code).toBe(ErrorCode.Conflict);
    expect(consumeRefusal("i", { eventName: "e", sequence: 3 }, 3)).toBeNull();
    expect(consumeRefusal("i", { eventName: "e", sequence: 3 }, 2)?.code).toBe(ErrorCode.Conflict);
    expect(consumeRefusal("i", { eventName: "e", sequence: 3 }, undefined)?.code).toBe(ErrorCode.Conflict);
    expect(consumeRefusal("i", undefined, undefined)).toBeNull();
  });

  it("release and extend: no record, another holder, expired (extend only)", () => {
    expect(releaseRefusal("i", "t", undefined, "w")?.code).toBe(ErrorCode.NotFound);
    expect(releaseRefusal("i", "t", { workerId: "x", expiresAt: null }, "w")?.code).toBe(ErrorCode.ClaimLost);
    expect(releaseRefusal("i", "t", { workerId: "w", expiresAt: 1 }, "w")).toBeNull();
    expect(extendRefusal("i", "t", { workerId: "w", expiresAt: 1 }, "w", 2)?.code).toBe(ErrorCode.ClaimLost);
    expect(extendRefusal("i", "t", { workerId: "w", expiresAt: null }, "w", 2)).toBeNull();
  });
});

describe("retryOnRace", () => {
  it("retries lost races and returns the first result", async () => {
    let calls = 0;
    const value = await retryOnRace("op", async () => (++calls < 3 ? RETRY : "done"));
    expect(value).toBe("done");
    expect(calls).toBe(3);
  });

  it("gives up with a BackendError after the attempts", async () => {
    await expect(
      retryOnRace('saveSnapshot of "x"', async () => RETRY, { attempts: 4, capMs: 1 }),
    ).rejects.toMatchObject({
      code: ErrorCode.Backend,
      message: expect.stringContaining("gave up after 4 attempts"),
    });
  });

  it("lets an attempt's own error through unchanged", async () => {
    const boom = new Error("boom");
    await expect(retryOnRace("op", async () => Promise.reject(boom))).rejects.toBe(boom);
  });
});

describe("connectionSecrets", () => {
  it("finds a URL password as written and decoded, and a password parameter", () => {
    expect(connectionSecrets("postgres://u:p%40ss@host/db")).toEqual(["p%40ss", "p@ss"]);
    expect(connectionSecrets("redis://:hunter2@host:6379")).toEqual(["hunter2"]);
    expect(connectionSecrets("mongodb://host/db?password=s3cret")).toEqual(["s3cret"]);
    expect(connectionSecrets("mongodb://u:s%3Dcret@h1:27017,h2:27018/db?replicaSet=rs")).toEqual([
      "s%3Dcret",
      "s=cret",
    ]);
    expect(connectionSecrets("postgresql://u:pw@h1:5432,h2:5433/db")).toEqual(["pw"]);
    expect(connectionSecrets("host=x password=y")).toEqual([]);
    expect(connectionSecrets(undefined)).toEqual([]);
  });
});

describe("isMigratable", () => {
  it("tells backends with migrate() from those without", () => {
    expect(
      isMigratable({ migrate: async () => ({ applied: [], version: 1 }) } as unknown as PersistentBackend),
    ).toBe(true);
    expect(isMigratable({} as PersistentBackend)).toBe(false);
  });
});

describe("transitionHeader", () => {
  const waitAt = (s: ReturnType<typeof createSnapshot>) =>
    updatePosition(s, { kind: "AwaitingEvent", eventName: "e", nextTaskId: "b", timeoutAt: 9_000 }, 3);

  it("pauses, resumes and cancels from the header and result ids alone", () => {
    const snapshot = waitAt(markTaskCompleted(createSnapshot("wf", "h", { now: 1 }), "a", text("A"), 2));
    const stored = toStoredSnapshot(snapshot);
    const view = {
      instanceId: "wf",
      header: stored.header,
      lastCompletedTaskId: "a",
      hasResult: (t: string) => t === "a",
    };
    const request = { reason: "r", requestedBy: "me" };
    const paused = transitionHeader("pause", view, request, 10);
    expect(paused).toMatchObject({
      status: "Paused",
      paused: true,
      finished: false,
      readyTaskId: null,
      awaiting: null,
      updatedAt: 10,
    });
    const resumed = transitionHeader(
      "resume",
      { ...view, header: paused.header },
      { reason: null, requestedBy: null },
      20,
    );
    expect(resumed).toMatchObject({
      status: "InProgress",
      awaiting: { eventName: "e", nextTaskId: "b", timeoutAt: 9_000 },
    });
    const cancelled = transitionHeader("cancel", { ...view, header: paused.header }, request, 30);
    expect(cancelled).toMatchObject({ status: "Cancelled", finished: true, readyTaskId: null });
    const back = fromStoredParts({
      instanceId: "wf",
      header: cancelled.header,
      initialInput: null,
      results: [{ taskId: "a", output: text("A") }],
      lastCompletedTaskId: null,
    });
    expect(back.state).toEqual({
      kind: "Cancelled",
      reason: "r",
      requestedBy: "me",
      cancelledAt: 30,
      completedTasks: { a: { taskId: "a", output: text("A") } },
      interruptedAtTaskId: "b",
    });
  });

  it("a position task that already has a result is neither ready nor interrupted", () => {
    const snapshot = updatePosition(
      markTaskCompleted(createSnapshot("wf", "h", { now: 1 }), "a", text("A"), 2),
      { kind: "AtTask", taskId: "a" },
      3,
    );
    const stored = toStoredSnapshot(snapshot);
    const view = {
      instanceId: "wf",
      header: stored.header,
      lastCompletedTaskId: "a",
      hasResult: (t: string) => t === "a",
    };
    const paused = transitionHeader("pause", view, { reason: null, requestedBy: null }, 10);
    expect(
      transitionHeader("resume", { ...view, header: paused.header }, { reason: null, requestedBy: null }, 11)
        .readyTaskId,
    ).toBeNull();
    const cancelled = transitionHeader("cancel", view, { reason: null, requestedBy: null }, 12);
    const back = fromStoredParts({
      instanceId: "wf",
      header: cancelled.header,
      initialInput: null,
      results: [],
      lastCompletedTaskId: null,
    });
    expect(back.state).toMatchObject({ kind: "Cancelled", interruptedAtTaskId: null });
  });
});
