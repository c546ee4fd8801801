import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import type { AvailableTask } from "../../claims.js";
import { ErrorCode } from "../../errors.js";
import { markTaskCompleted, updatePosition, type WorkflowSnapshot } from "../../snapshot.js";
import { atTask, awaiting, finished } from "../fixtures.js";
import {
  beforeDeadline,
  claimOrFail,
  eventually,
  expectCode,
  expirySlackMs,
  patternBytes,
  sleep,
  text,
  uid,
  useSubject,
} from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

async function findTask(backend: PersistentBackend, instanceId: string): Promise<AvailableTask | undefined> {
  const found = await backend.findAvailableTasks("observer", 1000);
  return found.find((t) => t.instanceId === instanceId);
}

/** The write a worker makes after running the task that follows a wait: result + next position, consuming its event. */
function pastTheWait(
  snapshot: WorkflowSnapshot,
  taskId: string,
  output: string,
  next: string,
): WorkflowSnapshot {
  return updatePosition(markTaskCompleted(snapshot, taskId, text(output)), { kind: "AtTask", taskId: next });
}

export function eventsGroup(options: ConformanceOptions): void {
  describe("events", () => {
    it("an event sent before the wait is kept; the wait's task is then ready with the event as input", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const sequence = await backend.sendEvent(id, "approval", text("yes"));
      expect(Number.isSafeInteger(sequence) && sequence > 0).toBe(true);
      expect(await findTask(backend, id)).toMatchObject({ taskId: "t1" });
      await backend.saveSnapshot(awaiting(id, "approval", "t2", { completed: { t1: text("one") } }));
      const task = await findTask(backend, id);
      expect(task).toMatchObject({ taskId: "t2", event: { eventName: "approval", sequence } });
      expect(task?.timedOut ?? false).toBe(false);
      expect(decode(task?.input ?? new Uint8Array())).toBe("yes");
      const [claimed] = await backend.claimAvailableTasks("worker-1", 10, 60_000);
      expect(claimed).toMatchObject({
        instanceId: id,
        taskId: "t2",
        event: { eventName: "approval", sequence },
      });
      expect(decode(claimed?.input ?? new Uint8Array())).toBe("yes");
    });

    it("an event sent after the wait makes its task ready; an event of another name does not", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "payment", "t2"));
      expect(await findTask(backend, id)).toBeUndefined();
      await backend.sendEvent(id, "other", text("no"));
      expect(await findTask(backend, id)).toBeUndefined();
      const sequence = await backend.sendEvent(id, "payment", text("paid"));
      const task = await findTask(backend, id);
      expect(task).toMatchObject({ taskId: "t2", event: { eventName: "payment", sequence } });
      expect(decode(task?.input ?? new Uint8Array())).toBe("paid");
      expect((await backend.loadPendingEvents(id)).map((e) => [e.eventName, decode(e.payload)])).toEqual([
        ["other", "no"],
        ["payment", "paid"],
      ]);
    });

    it("the fenced write past the wait consumes its event exactly once; events of one name go in order", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const wait = awaiting(id, "step", "t1");
      await backend.saveSnapshot(wait);
      const first = await backend.sendEvent(id, "step", text("first"));
      const second = await backend.sendEvent(id, "step", text("second"));
      expect(second).toBeGreaterThan(first);
      const [task] = await backend.claimAvailableTasks("worker-1", 1, 60_000);
      expect(task?.event).toEqual({ eventName: "step", sequence: first });
      if (task === undefined) throw new Error("no task");
      // Consuming the second before the first is refused, and writes nothing.
      await expectCode(
        backend.saveSnapshot(pastTheWait(wait, "t1", "r1", "t2"), {
          claim: task.claim,
          consumeEvent: { eventName: "step", sequence: second },
        }),
        ErrorCode.Conflict,
      );
      expect((await backend.loadSnapshot(id)).state).toMatchObject({ position: { kind: "AwaitingEvent" } });
      // The write with the event it carries lands and consumes it.
      const next = updatePosition(markTaskCompleted(wait, "t1", text("r1")), {
        kind: "AwaitingEvent",
        eventName: "step",
        nextTaskId: "t2",
        timeoutAt: null,
      });
      await backend.saveSnapshot(next, { claim: task.claim, consumeEvent: task.event });
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      expect((await backend.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([second]);
      // The next wait of that name gets the second event.
      const again = await findTask(backend, id);
      expect(again).toMatchObject({ taskId: "t2", event: { eventName: "step", sequence: second } });
      expect(decode(again?.input ?? new Uint8Array())).toBe("second");
      // The same event cannot be consumed twice.
      const claim2 = await claimOrFail(backend, id, "t2", "worker-2", 60_000);
      await backend.saveSnapshot(pastTheWait(next, "t2", "r2", "t3"), {
        claim: claim2,
        consumeEvent: { eventName: "step", sequence: second },
      });
      const claim3 = await claimOrFail(backend, id, "t3", "worker-2", 60_000);
      await expectCode(
        backend.saveSnapshot(pastTheWait(next, "t3", "r3", "t4"), {
          claim: claim3,
          consumeEvent: { eventName: "step", sequence: second },
        }),
        ErrorCode.Conflict,
      );
      expect(await backend.loadPendingEvents(id)).toEqual([]);
    });

    it("a worker whose lease expired before its write consumes nothing; the next worker gets the same event", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const id = uid();
      const wait = awaiting(id, "approval", "t1");
      await backend.saveSnapshot(wait);
      const sequence = await backend.sendEvent(id, "approval", text("ok"));
      const [stale] = await backend.claimAvailableTasks("worker-1", 1, 200);
      if (stale === undefined) throw new Error("no task");
      await sleep(200 + expirySlackMs(backend) + 100);
      const fresh = await eventually("the expired claim to be taken over", async () => {
        const [t] = await other.claimAvailableTasks("worker-2", 1, 60_000);
        return t;
      });
      expect(fresh.event).toEqual({ eventName: "approval", sequence });
      expect(decode(fresh.input)).toBe("ok");
      await expectCode(
        backend.saveSnapshot(pastTheWait(wait, "t1", "stale", "t2"), {
          claim: stale.claim,
          consumeEvent: stale.event,
        }),
        ErrorCode.ClaimLost,
      );
      expect((await backend.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([sequence]);
      await other.saveSnapshot(pastTheWait(wait, "t1", "fresh", "t2"), {
        claim: fresh.claim,
        consumeEvent: fresh.event,
      });
      expect(await backend.loadPendingEvents(id)).toEqual([]);
    });

    it("two workers racing for an event-ready task: one wins, the event is consumed once", async () => {
      const { backend, connect } = await useSubject(options);
      const clients = [backend, await connect(), await connect()];
      const id = uid();
      const wait = awaiting(id, "go", "t1");
      await backend.saveSnapshot(wait);
      await backend.sendEvent(id, "go", text("now"));
      const results = await Promise.all(
        clients.map((c, i) => c.claimAvailableTasks(`racer-${i}`, 1, 60_000)),
      );
      const winners = results.flat().filter((t) => t.instanceId === id);
      expect(winners).toHaveLength(1);
      const winner = winners[0];
      if (winner === undefined) throw new Error("no winner");
      await backend.saveSnapshot(pastTheWait(wait, "t1", "done", "t2"), {
        claim: winner.claim,
        consumeEvent: winner.event,
      });
      expect(await backend.loadPendingEvents(id)).toEqual([]);
      expect(await findTask(backend, id)).toMatchObject({ taskId: "t2" });
    });

    it("a timeout makes the wait ready with no event: not before timeoutAt, then timedOut with empty input", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const timeoutAt = Date.now() + 400;
      await backend.saveSnapshot(
        awaiting(id, "approval", "t2", { timeoutAt, completed: { t1: text("one") } }),
      );
      await beforeDeadline(
        timeoutAt,
        () => findTask(backend, id),
        (found) => expect(found).toBeUndefined(),
      );
      const task = await eventually("the wait to time out", async () => findTask(backend, id));
      expect(Date.now()).toBeGreaterThanOrEqual(timeoutAt - expirySlackMs(backend));
      expect(task).toMatchObject({ taskId: "t2", timedOut: true });
      expect(task.event).toBeUndefined();
      expect(task.input.byteLength).toBe(0);
      // A past timeout is ready at once; without a timeout and an event, never.
      const past = uid();
      await backend.saveSnapshot(awaiting(past, "approval", "t1", { timeoutAt: 1_000 }));
      expect(await findTask(backend, past)).toMatchObject({ timedOut: true });
      const never = uid();
      await backend.saveSnapshot(awaiting(never, "approval", "t1"));
      await sleep(300);
      expect(await findTask(backend, never)).toBeUndefined();
    });

    it("a timed-out task that is claimed is not handed out again while the claim lives, and is after it expires", async () => {
      const { backend, connect } = await useSubject(options);
      const other = await connect();
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "approval", "t1", { timeoutAt: 1_000 }));
      const [first] = await backend.claimAvailableTasks("worker-1", 10, 300);
      expect(first).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
      const expiresAt = first?.claim.expiresAt ?? 0;
      await beforeDeadline(
        expiresAt,
        () => findTask(other, id),
        (found) => expect(found).toBeUndefined(),
      );
      await beforeDeadline(
        expiresAt,
        () => other.claimAvailableTasks("worker-2", 10, 60_000),
        (claimed) => expect(claimed.map((t) => t.instanceId)).not.toContain(id),
      );
      await sleep(300 + expirySlackMs(backend) + 100);
      const again = await eventually("the expired claim's task to be offered again", async () => {
        const [t] = await other.claimAvailableTasks("worker-2", 10, 60_000);
        return t;
      });
      expect(again).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
      expect(again.claim.token).toBeGreaterThan(first?.claim.token ?? Number.POSITIVE_INFINITY);
    });

    it("a timed wait leaves discovery while paused or cancelled, and comes back on resume", async () => {
      const { backend } = await useSubject(options);
      const paused = uid();
      const cancelled = uid();
      for (const id of [paused, cancelled])
        await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: 1_000 }));
      await backend.pauseWorkflow(paused);
      await backend.cancelWorkflow(cancelled);
      expect(await findTask(backend, paused)).toBeUndefined();
      expect(await findTask(backend, cancelled)).toBeUndefined();
      await backend.resumeWorkflow(paused);
      expect(await findTask(backend, paused)).toMatchObject({ taskId: "t1", timedOut: true });
    });

    it("waits are served in key order with other ready tasks: by updatedAt when an event is pending, by timeoutAt when timed out", async () => {
      const { backend } = await useSubject(options);
      const T0 = 1_700_000_000_000;
      const p = uid("order");
      const byEvent = `${p}-a`;
      const byTimeout = `${p}-b`;
      const atTaskId = `${p}-c`;
      await backend.saveSnapshot(awaiting(byEvent, "e", "t1", { updatedAt: T0 + 10 }));
      await backend.sendEvent(byEvent, "e", text("x"));
      await backend.saveSnapshot(awaiting(byTimeout, "e", "t1", { updatedAt: T0 + 1, timeoutAt: T0 + 5 }));
      await backend.saveSnapshot(atTask(atTaskId, "t1", { updatedAt: T0 + 7 }));
      const found = (await backend.findAvailableTasks("observer", 100)).filter((t) =>
        t.instanceId.startsWith(p),
      );
      expect(found.map((t) => t.instanceId)).toEqual([byTimeout, atTaskId, byEvent]);
    });

    it("a terminal saveSnapshot drops the pending events", async () => {
      const { backend } = await useSubject(options);
      for (const state of [
        { kind: "Completed" as const, finalOutput: text("x") },
        { kind: "Failed" as const, error: "boom" },
      ]) {
        const id = uid();
        await backend.saveSnapshot(awaiting(id, "e", "t1"));
        await backend.sendEvent(id, "other", text("never consumed"));
        await backend.saveSnapshot(finished(id, state));
        expect(await backend.loadPendingEvents(id)).toEqual([]);
      }
    });

    it("a pending event wins over a passed timeout", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "approval", "t1", { timeoutAt: 1_000 }));
      const sequence = await backend.sendEvent(id, "approval", text("late but here"));
      const task = await findTask(backend, id);
      expect(task).toMatchObject({ event: { eventName: "approval", sequence } });
      expect(task?.timedOut ?? false).toBe(false);
    });

    it("finished and cancelled workflows refuse events; missing is NotFound; cancel and delete drop them", async () => {
      const { backend } = await useSubject(options);
      await expectCode(backend.sendEvent(uid("missing"), "e", text("x")), ErrorCode.NotFound);
      await expectCode(backend.loadPendingEvents(uid("missing")), ErrorCode.NotFound);
      for (const state of [
        { kind: "Completed" as const, finalOutput: text("x") },
        { kind: "Failed" as const, error: "boom" },
      ]) {
        const id = uid();
        await backend.saveSnapshot(finished(id, state));
        await expectCode(backend.sendEvent(id, "e", text("x")), ErrorCode.Conflict);
      }
      const cancelled = uid();
      await backend.saveSnapshot(awaiting(cancelled, "e", "t1"));
      await backend.sendEvent(cancelled, "other", text("kept until cancel"));
      await backend.cancelWorkflow(cancelled);
      expect(await backend.loadPendingEvents(cancelled)).toEqual([]);
      await expectCode(backend.sendEvent(cancelled, "e", text("x")), ErrorCode.Conflict);
      // Delete removes the events: a re-created instance does not see them.
      const deleted = uid();
      await backend.saveSnapshot(awaiting(deleted, "e", "t1"));
      await backend.sendEvent(deleted, "e", text("old"));
      await backend.deleteSnapshot(deleted);
      await backend.saveSnapshot(awaiting(deleted, "e", "t1"));
      expect(await backend.loadPendingEvents(deleted)).toEqual([]);
      expect(await findTask(backend, deleted)).toBeUndefined();
    });

    it("a paused workflow keeps the events it is sent; its wait is ready only once resumed", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "e", "t1"));
      await backend.pauseWorkflow(id);
      await backend.sendEvent(id, "e", text("while paused"));
      expect(await findTask(backend, id)).toBeUndefined();
      await backend.resumeWorkflow(id);
      const task = await findTask(backend, id);
      expect(decode(task?.input ?? new Uint8Array())).toBe("while paused");
    });

    it("event payloads follow the output rules: exact bytes, the size limit, validation before I/O", async () => {
      const { backend } = await useSubject(options, { maxPayloadBytes: 1024 });
      const id = uid();
      await backend.saveSnapshot(awaiting(id, "e", "t1"));
      const all = Uint8Array.from({ length: 256 }, (_, i) => i);
      await backend.sendEvent(id, "e", Buffer.from(all));
      const [event] = await backend.loadPendingEvents(id);
      expect(Array.from(event?.payload ?? [])).toEqual(Array.from(all));
      expect(Object.getPrototypeOf(event?.payload)).toBe(Uint8Array.prototype);
      await expectCode(backend.sendEvent(id, "e", new Uint8Array(1025)), ErrorCode.PayloadTooLarge);
      await expectCode(backend.sendEvent(id, "", text("x")), ErrorCode.Validation);
      await expectCode(backend.sendEvent(id, "e", "text" as never), ErrorCode.Validation);
      const claim = await claimOrFail(backend, id, "t1", "worker-1");
      await expectCode(
        backend.saveSnapshot(atTask(id, "t2"), { consumeEvent: { eventName: "e", sequence: 1 } }),
        ErrorCode.Validation,
      );
      await expectCode(
        backend.saveSnapshot(atTask(id, "t2"), { claim, consumeEvent: { eventName: "e", sequence: 0 } }),
        ErrorCode.Validation,
      );
      expect(await backend.loadPendingEvents(id)).toHaveLength(1);
    });

    it(
      "a 5 MiB event round-trips and is the next task's input",
      async () => {
        const { backend } = await useSubject(options);
        const id = uid();
        const payload = patternBytes(5 * 1024 * 1024, 7);
        await backend.saveSnapshot(awaiting(id, "big", "t1"));
        await backend.sendEvent(id, "big", payload);
        const task = await findTask(backend, id);
        expect(task?.input.byteLength).toBe(payload.byteLength);
        expect(Buffer.compare(task?.input ?? new Uint8Array(), payload)).toBe(0);
      },
      options.slowTestTimeoutMs ?? 60_000,
    );
  });
}
