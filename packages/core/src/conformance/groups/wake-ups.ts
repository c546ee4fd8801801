import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import { ErrorCode } from "../../errors.js";
import type { NextStep } from "../../snapshot.js";
import type { WakeReason } from "../../wake-ups.js";
import { atTask, inProgress, queued } from "../fixtures.js";
import { claimOrFail, expectCode, expirySlackMs, sleep, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/** Long enough that only a missed wake-up reaches it. */
const LONG_WAIT_MS = 20_000;
/** A wait started this long ago has made its first look and is listening. */
const SETTLE_MS = 150;
/** Room for a loaded machine on top of a backend's own bound. */
const LOAD_SLACK_MS = 1_500;

interface Pending {
  /** Resolves with the reason and how long the wait lasted after the action. */
  settled: Promise<{ reason: WakeReason; afterActionMs: number }>;
  /** Call just before the action that should wake it. */
  act: () => void;
}

/**
 * Starts a wait and lets it settle into waiting, so the action that follows can only wake it.
 * A notification of a write made before the wait started may still arrive after it listens
 * (Redis Cluster relays a publish between nodes over its bus): that wait ends early with
 * "notified", as the README allows, and proves nothing about the action, so a fresh one is started.
 */
async function pending(
  backend: PersistentBackend,
  queues: string[],
  timeoutMs = LONG_WAIT_MS,
): Promise<Pending> {
  for (let attempt = 1; ; attempt++) {
    let actedAt = Number.NaN;
    let endedEarly = false;
    const settled = backend.waitForTasks({ queues, timeoutMs }).then((reason) => {
      if (Number.isNaN(actedAt)) endedEarly = true;
      return { reason, afterActionMs: Date.now() - actedAt };
    });
    await sleep(SETTLE_MS);
    if (endedEarly && attempt < 3) {
      const { reason } = await settled;
      // Only a late notification may end a wait before the action; anything else is a failure.
      expect(reason).toBe("notified");
      continue;
    }
    return {
      settled,
      act: () => {
        actedAt = Date.now();
      },
    };
  }
}

/** How soon after a write a waiter must be up: push at once, poll within its bound. */
function wakeBoundMs(backend: PersistentBackend): number {
  const { wakeUps, wakeBoundMs } = backend.capabilities;
  return (wakeUps === "push" ? 0 : wakeBoundMs) + LOAD_SLACK_MS;
}

/** The reason a write by another client gives: push says "notified", a poll finds it "ready". */
function wokenBy(backend: PersistentBackend): WakeReason {
  return backend.capabilities.wakeUps === "push" ? "notified" : "ready";
}

/** Waits as a worker does until something is claimable or the deadline; returns the wake count. */
async function waitUntilClaimable(
  backend: PersistentBackend,
  queues: string[],
  deadline: number,
): Promise<{ wakes: number; reasons: WakeReason[] }> {
  const reasons: WakeReason[] = [];
  for (;;) {
    const reason = await backend.waitForTasks({ queues, timeoutMs: Math.max(0, deadline - Date.now()) });
    reasons.push(reason);
    if (reason === "timeout") return { wakes: reasons.length, reasons };
    if ((await backend.findAvailableTasks("w", 1, { queues })).length > 0)
      return { wakes: reasons.length, reasons };
  }
}

export function wakeUpsGroup(options: ConformanceOptions): void {
  describe("wake-ups", () => {
    it("a ready task ends the wait at once ('ready'); none: it lasts timeoutMs ('timeout'); timeoutMs 0 looks once", async () => {
      const { backend } = await useSubject(options);
      const q = uid("q");
      let started = Date.now();
      expect(await backend.waitForTasks({ queues: [q], timeoutMs: 300 })).toBe("timeout");
      expect(Date.now() - started).toBeGreaterThanOrEqual(290);
      expect(await backend.waitForTasks({ queues: [q], timeoutMs: 0 })).toBe("timeout");
      await backend.saveSnapshot(queued(uid(), q));
      started = Date.now();
      expect(await backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS })).toBe("ready");
      expect(await backend.waitForTasks({ queues: ["elsewhere", q], timeoutMs: 0 })).toBe("ready");
      expect(Date.now() - started).toBeLessThan(LOAD_SLACK_MS);
    });

    it("a save by another client wakes a waiter of its queue and not a waiter of another queue", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const q = uid("q");
      const mine = await pending(backend, [q]);
      const theirs = await pending(backend, [uid("other")], 1_000);
      mine.act();
      theirs.act();
      await other.saveSnapshot(queued(uid(), q));
      const woken = await mine.settled;
      expect(woken.reason).toBe(wokenBy(backend));
      expect(woken.afterActionMs).toBeLessThan(wakeBoundMs(backend));
      expect((await theirs.settled).reason).toBe("timeout");
    });

    it("a step (completeTasks with next) wakes a waiter of the next task's queue", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const id = uid();
      const q = uid("next");
      await other.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(other, id, "t1", "w");
      const waiter = await pending(backend, [q]);
      waiter.act();
      const next: NextStep = { kind: "AtTask", taskId: "t2", queue: q };
      expect(await other.completeTasks([{ claim, output: text("one"), next }])).toEqual([null]);
      const woken = await waiter.settled;
      expect(woken.reason).toBe(wokenBy(backend));
      expect(woken.afterActionMs).toBeLessThan(wakeBoundMs(backend));
    });

    it("a release, a resume and an event each wake a waiter", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const q = uid("q");
      const released = uid("released");
      await other.saveSnapshot(queued(released, q));
      const [task] = await other.claimAvailableTasks("w", 10, 60_000, { queues: [q] });
      expect(task?.instanceId).toBe(released);
      const paused = uid("paused");
      await other.saveSnapshot(queued(paused, q));
      await other.pauseWorkflow(paused);
      const waiting = uid("waiting");
      await other.saveSnapshot(
        inProgress(waiting, {
          position: { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t2", timeoutAt: null, queue: q },
        }),
      );
      const actions: Array<[string, () => Promise<unknown>]> = [
        ["release", () => other.releaseTaskClaim(released, "t1", "w")],
        ["resume", () => other.resumeWorkflow(paused)],
        ["event", () => other.sendEvent(waiting, "go", text("payload"))],
      ];
      for (const [name, action] of actions) {
        // Each action leaves a ready task behind; claim it so that the next wait has to be woken.
        await other.claimAvailableTasks("drain", 100, 60_000, { queues: [q] });
        const waiter = await pending(backend, [q]);
        waiter.act();
        await action();
        const woken = await waiter.settled;
        expect({ name, reason: woken.reason }).toEqual({ name, reason: wokenBy(backend) });
        expect(woken.afterActionMs).toBeLessThan(wakeBoundMs(backend));
      }
    });

    it("a future runAt ends the wait when it comes due, not before", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const q = uid("q");
      await backend.waitForTasks({ queues: [q], timeoutMs: 0 });
      const runAt = Date.now() + 600;
      await other.saveSnapshot(queued(uid(), q, runAt));
      const { reasons } = await waitUntilClaimable(backend, [q], Date.now() + LONG_WAIT_MS);
      expect(reasons.at(-1)).not.toBe("timeout");
      expect(Date.now()).toBeGreaterThanOrEqual(runAt - expirySlackMs(backend));
      expect(Date.now()).toBeLessThan(runAt + wakeBoundMs(backend));
      // A worker's loop, not a busy one: a handful of wakes at most (a save may notify early).
      expect(reasons.length).toBeLessThanOrEqual(5);
    });

    it("a retry (failTasks with retryAt) and a claim's expiry end the wait when due", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const q = uid("q");
      const failed = uid("failed");
      await other.saveSnapshot(queued(failed, q));
      const [task] = await other.claimAvailableTasks("w", 1, 60_000, { queues: [q] });
      if (task === undefined) throw new Error("no task");
      const retryAt = Date.now() + 600;
      expect(await other.failTasks([{ claim: task.claim, error: "boom", retryAt }])).toEqual([null]);
      let { reasons } = await waitUntilClaimable(backend, [q], Date.now() + LONG_WAIT_MS);
      expect(reasons.at(-1)).not.toBe("timeout");
      expect(Date.now()).toBeGreaterThanOrEqual(retryAt - expirySlackMs(backend));
      expect(Date.now()).toBeLessThan(retryAt + wakeBoundMs(backend));
      // Claimed with a short ttl and never finished: the wait ends when it can be taken over.
      const [held] = await other.claimAvailableTasks("crashed", 1, 600, { queues: [q] });
      if (held === undefined) throw new Error("no retry");
      const expiresAt = held.claim.expiresAt ?? 0;
      ({ reasons } = await waitUntilClaimable(backend, [q], Date.now() + LONG_WAIT_MS));
      expect(reasons.at(-1)).not.toBe("timeout");
      expect(Date.now()).toBeGreaterThanOrEqual(expiresAt - expirySlackMs(backend));
      expect(Date.now()).toBeLessThan(expiresAt + wakeBoundMs(backend));
    });

    it("an AbortSignal ends the wait ('aborted'); an aborted one returns at once; close() ends every wait ('closed')", async () => {
      const { backend, connect } = await useSubject(options);
      const q = uid("q");
      const controller = new AbortController();
      const aborted = backend.waitForTasks({
        queues: [q],
        timeoutMs: LONG_WAIT_MS,
        signal: controller.signal,
      });
      await sleep(SETTLE_MS);
      const started = Date.now();
      controller.abort();
      expect(await aborted).toBe("aborted");
      expect(Date.now() - started).toBeLessThan(LOAD_SLACK_MS);
      expect(
        await backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS, signal: AbortSignal.abort() }),
      ).toBe("aborted");
      const closing = await connect();
      const waits = Array.from({ length: 3 }, () =>
        closing.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS }),
      );
      await sleep(SETTLE_MS);
      const closedAt = Date.now();
      await closing.close();
      expect(await Promise.all(waits)).toEqual(["closed", "closed", "closed"]);
      expect(Date.now() - closedAt).toBeLessThan(LOAD_SLACK_MS);
      await expectCode(closing.waitForTasks({ timeoutMs: 10 }), ErrorCode.Backend);
    });

    it("many waiters in one process all wake on one write", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const q = uid("q");
      let actedAt = Number.NaN;
      const waits = Array.from({ length: 20 }, () =>
        backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS }).then((reason) => ({
          reason,
          ms: Date.now() - actedAt,
        })),
      );
      await sleep(SETTLE_MS);
      actedAt = Date.now();
      await other.saveSnapshot(queued(uid(), q));
      const woken = await Promise.all(waits);
      for (const w of woken) {
        expect(w.reason).toBe(wokenBy(backend));
        expect(w.ms).toBeLessThan(wakeBoundMs(backend));
      }
    });

    it("bad options are refused (ValidationError) before any wait", async () => {
      const { backend } = await useSubject(options);
      const bad: unknown[] = [
        undefined,
        null,
        {},
        { timeoutMs: -1 },
        { timeoutMs: 1.5 },
        { timeoutMs: 3_600_001 },
        { timeoutMs: "10" },
        { timeoutMs: 10, queues: [] },
        { timeoutMs: 10, queues: [""] },
        { timeoutMs: 10, queues: "default" },
        { timeoutMs: 10, signal: {} },
      ];
      for (const options of bad) {
        await expectCode(backend.waitForTasks(options as never), ErrorCode.Validation);
      }
    });
  });
}
