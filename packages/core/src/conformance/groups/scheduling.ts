import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import type { AvailableTask } from "../../claims.js";
import { ErrorCode } from "../../errors.js";
import { markFailed, type WorkflowSnapshot } from "../../snapshot.js";
import { compareIds } from "../../validation.js";
import { atTask, awaiting, comparable, finished, inProgress } from "../fixtures.js";
import {
  beforeDeadline,
  claimOrFail,
  eventually,
  expectCode,
  expirySlackMs,
  rejection,
  sleep,
  text,
  uid,
  useSubject,
} from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const T0 = 1_700_000_000_000;

/** An AtTask snapshot with a schedule. */
function scheduled(
  instanceId: string,
  taskId: string,
  schedule: { runAt?: number; priority?: number; queue?: string },
  options: Parameters<typeof inProgress>[1] = {},
): WorkflowSnapshot {
  return inProgress(instanceId, { ...options, position: { kind: "AtTask", taskId, ...schedule } });
}

async function find(backend: PersistentBackend, prefix: string, queues?: string[]): Promise<AvailableTask[]> {
  const found = await backend.findAvailableTasks(
    "observer",
    1000,
    queues === undefined ? undefined : { queues },
  );
  return found.filter((t) => t.instanceId.startsWith(prefix));
}

export function schedulingGroup(options: ConformanceOptions): void {
  describe("scheduling", () => {
    it("never hands out a task before its runAt by the store's clock, then does", async () => {
      const { backend } = await useSubject(options);
      const p = uid("sleep");
      const runAt = Date.now() + 500;
      await backend.saveSnapshot(scheduled(`${p}-a`, "t1", { runAt }));
      await beforeDeadline(
        runAt,
        () => find(backend, p),
        (found) => expect(found).toEqual([]),
      );
      await beforeDeadline(
        runAt,
        () => backend.claimAvailableTasks("worker-1", 100, 60_000),
        (claimed) => expect(claimed.map((t) => t.instanceId)).not.toContain(`${p}-a`),
      );
      const claimed = await eventually("the task to come due", async () => {
        const [t] = (await backend.claimAvailableTasks("worker-1", 100, 60_000)).filter((x) =>
          x.instanceId.startsWith(p),
        );
        return t;
      });
      expect(Date.now()).toBeGreaterThanOrEqual(runAt - expirySlackMs(backend));
      expect(claimed).toMatchObject({ taskId: "t1", attempt: 1, priority: 3, queue: "default" });
    });

    it("serves by effective time readyAt + (priority - 1) x agingMs: a priority-5 task that waited goes first", async () => {
      const { backend } = await useSubject(options, { agingMs: 1_000 });
      const p = uid("prio");
      // Keys: a = T0 + 4 x 1000; b = T0 + 3000; c = T0 + 4500; d (priority 3, ready at its write) = T0 + 1000 + 2000.
      await backend.saveSnapshot(scheduled(`${p}-a`, "t1", { runAt: T0, priority: 5 }));
      await backend.saveSnapshot(scheduled(`${p}-b`, "t1", { runAt: T0 + 3_000, priority: 1 }));
      await backend.saveSnapshot(scheduled(`${p}-c`, "t1", { runAt: T0 + 4_500, priority: 1 }));
      await backend.saveSnapshot(atTask(`${p}-d`, "t1", { updatedAt: T0 + 1_000 }));
      const order = (await find(backend, p)).map((t) => t.instanceId);
      // b and d tie on T0 + 3000: by instance id.
      expect(order).toEqual([`${p}-b`, `${p}-d`, `${p}-a`, `${p}-c`]);
      const claimed = await backend.claimAvailableTasks("worker-1", 2, 60_000);
      expect(claimed.map((t) => [t.instanceId, t.priority])).toEqual([
        [`${p}-b`, 1],
        [`${p}-d`, 3],
      ]);
    });

    it("ties on effective time go by instance id in code point order", async () => {
      const { backend } = await useSubject(options);
      const p = uid("tie");
      const ids = [`${p}-\u{1F600}`, `${p}-\uFFFD`, `${p}-b`, `${p}-a`];
      for (const id of ids) await backend.saveSnapshot(scheduled(id, "t1", { runAt: T0 }));
      expect((await find(backend, p)).map((t) => t.instanceId)).toEqual([...ids].sort(compareIds));
    });

    it("queues: a worker gets only the tasks of the queues it serves", async () => {
      const { backend } = await useSubject(options);
      const p = uid("q");
      await backend.saveSnapshot(scheduled(`${p}-gpu`, "t1", { queue: "gpu" }, { updatedAt: T0 }));
      await backend.saveSnapshot(atTask(`${p}-plain`, "t1", { updatedAt: T0 + 1 }));
      await backend.saveSnapshot(awaiting(`${p}-wait`, "e", "t2", { timeoutAt: 1 }));
      expect((await find(backend, p)).map((t) => t.instanceId)).toEqual([`${p}-wait`, `${p}-plain`]);
      expect((await find(backend, p, ["gpu"])).map((t) => [t.instanceId, t.queue])).toEqual([
        [`${p}-gpu`, "gpu"],
      ]);
      expect((await find(backend, p, ["gpu", "default"])).map((t) => t.instanceId).sort()).toEqual(
        [`${p}-gpu`, `${p}-plain`, `${p}-wait`].sort(),
      );
      expect(
        (await backend.claimAvailableTasks("worker-1", 100, 60_000)).map((t) => t.instanceId),
      ).not.toContain(`${p}-gpu`);
      const [gpu] = await backend.claimAvailableTasks("worker-gpu", 100, 60_000, { queues: ["gpu"] });
      expect(gpu).toMatchObject({ instanceId: `${p}-gpu`, queue: "gpu" });
    });

    it("a takeover after a crash counts as an attempt: the next claim says attempt 2", async () => {
      const { backend } = await useSubject(options);
      const p = uid("crash");
      await backend.saveSnapshot(atTask(`${p}-a`, "t1", { updatedAt: T0 }));
      const [first] = await backend.claimAvailableTasks("worker-1", 1, 200);
      expect(first).toMatchObject({ instanceId: `${p}-a`, attempt: 1 });
      await sleep(200 + expirySlackMs(backend) + 100);
      const second = await eventually("the takeover", async () => {
        const [t] = await backend.claimAvailableTasks("worker-2", 1, 60_000);
        return t;
      });
      expect(second).toMatchObject({ instanceId: `${p}-a`, attempt: 2 });
      expect((await backend.loadSnapshot(`${p}-a`)).attempts?.t1).toMatchObject({
        count: 1,
        lastError: null,
      });
    });

    it("failTasks records the attempt, releases the claim and makes the task ready again at retryAt, not before", async () => {
      const { backend } = await useSubject(options);
      const p = uid("retry");
      const id = `${p}-a`;
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 }));
      const [task] = await backend.claimAvailableTasks("worker-1", 1, 60_000);
      if (task === undefined) throw new Error("no task");
      const before = Date.now();
      const retryAt = Date.now() + 500;
      expect(await backend.failTasks([{ claim: task.claim, error: "boom", retryAt }])).toEqual([null]);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state).toMatchObject({ kind: "InProgress", position: { kind: "AtTask", taskId: "t1" } });
      expect(loaded.attempts?.t1).toMatchObject({ count: 1, lastError: "boom", retryAt });
      expect(loaded.attempts?.t1?.lastFailedAt).toBeGreaterThanOrEqual(before - 2_000);
      // Released: the holder's claim is gone.
      await expectCode(backend.releaseTaskClaim(id, "t1", "worker-1"), ErrorCode.NotFound);
      await beforeDeadline(
        retryAt,
        () => find(backend, p),
        (found) => expect(found).toEqual([]),
      );
      const again = await eventually("the retry to come due", async () => (await find(backend, p))[0]);
      expect(Date.now()).toBeGreaterThanOrEqual(retryAt - expirySlackMs(backend));
      expect(again).toMatchObject({ taskId: "t1", attempt: 2 });
    });

    it("failTasks is fenced: a stale claim is refused and records nothing; missing is NotFound, finished Conflict", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const stale = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      const live = await claimOrFail(backend, id, "t1", "worker-2", 60_000);
      const done = uid();
      await backend.saveSnapshot(finished(done, { kind: "Completed", finalOutput: text("x") }));
      const onDone = await claimOrFail(backend, done, "t1", "worker-3", 60_000);
      const missing = { ...onDone, instanceId: uid("missing") };
      const outcomes = await backend.failTasks([
        { claim: stale, error: "stale", retryAt: null },
        { claim: missing, error: "x", retryAt: null },
        { claim: onDone, error: "x", retryAt: null },
      ]);
      expect(outcomes.map((o) => o?.code)).toEqual([
        ErrorCode.ClaimLost,
        ErrorCode.NotFound,
        ErrorCode.Conflict,
      ]);
      expect((await backend.loadSnapshot(id)).attempts).toBeUndefined();
      // The live claim is untouched.
      expect((await backend.extendTaskClaim(id, "t1", "worker-2", 60_000)).token).toBe(live.token);
    });

    it("a failure with retryAt null leaves the task unscheduled where it is, for the runtime to decide", async () => {
      const { backend } = await useSubject(options);
      const p = uid("held");
      const id = `${p}-a`;
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 }));
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      expect(await backend.failTasks([{ claim, error: "fatal", retryAt: null }])).toEqual([null]);
      await sleep(200);
      expect(await find(backend, p)).toEqual([]);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.attempts?.t1).toMatchObject({ count: 1, lastError: "fatal", retryAt: null });
      await backend.saveSnapshot(markFailed(loaded, "gave up after 1 attempt"));
      expect((await backend.loadSnapshot(id)).state.kind).toBe("Failed");
    });

    it("a task is due at the later of its runAt and its retryAt", async () => {
      const { backend } = await useSubject(options);
      const p = uid("due");
      const future = Date.now() + 3_600_000;
      // runAt in an hour, a retry that is already past: not before the runAt.
      await backend.saveSnapshot({
        ...scheduled(`${p}-a`, "t1", { runAt: future }),
        attempts: { t1: { count: 1, lastError: "x", lastFailedAt: T0, retryAt: T0 } },
      });
      // runAt past, a retry in an hour: not before the retry.
      await backend.saveSnapshot({
        ...scheduled(`${p}-b`, "t1", { runAt: T0 }),
        attempts: { t1: { count: 1, lastError: "x", lastFailedAt: T0, retryAt: future } },
      });
      // Held: a failure with retryAt null.
      await backend.saveSnapshot({
        ...atTask(`${p}-c`, "t1"),
        attempts: { t1: { count: 1, lastError: "x", lastFailedAt: T0, retryAt: null } },
      });
      expect(await find(backend, p)).toEqual([]);
      // Failed through failTasks before its runAt (claimTask may claim it early) with a past retryAt.
      await backend.saveSnapshot(scheduled(`${p}-d`, "t1", { runAt: future }));
      const claim = await claimOrFail(backend, `${p}-d`, "t1", "worker-1");
      expect(await backend.failTasks([{ claim, error: "early", retryAt: T0 }])).toEqual([null]);
      expect(await find(backend, p)).toEqual([]);
    });

    it("due tasks of another queue never delay a queue's own, and due tasks are served by effective time", async () => {
      const { backend } = await useSubject(options, { agingMs: 1_000 });
      const p = uid("dueq");
      for (let i = 0; i < 12; i++) {
        await backend.saveSnapshot(scheduled(`${p}-other-${i}`, "t1", { runAt: T0 + i, queue: "other" }));
      }
      for (let i = 0; i < 12; i++) {
        await backend.saveSnapshot(
          scheduled(`${p}-p5-${String(i).padStart(2, "0")}`, "t1", { runAt: T0 + i, priority: 5 }),
        );
      }
      await backend.saveSnapshot(scheduled(`${p}-p1`, "t1", { runAt: T0 + 100, priority: 1 }));
      const [first] = await backend.claimAvailableTasks("worker-1", 1, 60_000);
      expect(first?.instanceId).toBe(`${p}-p1`);
      const [second] = await backend.findAvailableTasks("worker-1", 1);
      expect(second?.instanceId).toBe(`${p}-p5-00`);
    });

    it("a wait whose task failed with a retry comes back at retryAt, with its pending event; held, it does not", async () => {
      const { backend } = await useSubject(options);
      const p = uid("waitretry");
      const id = `${p}-a`;
      await backend.saveSnapshot(awaiting(id, "e", "t1"));
      await backend.sendEvent(id, "e", text("payload"));
      const [task] = (await backend.claimAvailableTasks("worker-1", 10, 60_000)).filter(
        (t) => t.instanceId === id,
      );
      if (task === undefined) throw new Error("no task");
      const retryAt = Date.now() + 300;
      expect(await backend.failTasks([{ claim: task.claim, error: "boom", retryAt }])).toEqual([null]);
      await beforeDeadline(
        retryAt,
        () => find(backend, p),
        (found) => expect(found).toEqual([]),
      );
      const again = await eventually(
        "the retried wait to come back",
        async () => (await find(backend, p))[0],
      );
      expect(again).toMatchObject({ taskId: "t1", attempt: 2, event: { eventName: "e" } });
      const held = `${p}-b`;
      await backend.saveSnapshot({
        ...awaiting(held, "e", "t1"),
        attempts: { t1: { count: 1, lastError: "x", lastFailedAt: T0, retryAt: null } },
      });
      await backend.sendEvent(held, "e", text("payload"));
      expect((await find(backend, p)).map((t) => t.instanceId)).not.toContain(held);
    });

    it("schedules, attempts and waits with priority and queue round-trip exactly", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const snapshot: WorkflowSnapshot = {
        ...scheduled(
          id,
          "t2",
          { runAt: T0 + 5, priority: 2, queue: "emails" },
          { completed: { t1: text("one") } },
        ),
        attempts: { t2: { count: 2, lastError: "timeout", lastFailedAt: T0, retryAt: T0 + 5 } },
      };
      await backend.saveSnapshot(snapshot);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(snapshot));
      const wait = awaiting(uid(), "e", "t1", { timeoutAt: 1 });
      const state = wait.state;
      if (state.kind !== "InProgress" || state.position.kind !== "AwaitingEvent") throw new Error("fixture");
      const waitWithSchedule = {
        ...wait,
        state: { ...state, position: { ...state.position, priority: 1, queue: "ops" } },
      };
      await backend.saveSnapshot(waitWithSchedule);
      expect(comparable(await backend.loadSnapshot(wait.instanceId))).toEqual(comparable(waitWithSchedule));
      const [task] = (await backend.findAvailableTasks("w", 10, { queues: ["ops"] })).filter(
        (t) => t.instanceId === wait.instanceId,
      );
      expect(task).toMatchObject({ taskId: "t1", priority: 1, queue: "ops", timedOut: true });
    });

    it("schedules, queues and failures are validated before any I/O", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      for (const schedule of [
        { priority: 0 },
        { priority: 6 },
        { priority: 2.5 },
        { queue: "" },
        { runAt: -1 },
      ]) {
        await expectCode(backend.saveSnapshot(scheduled(id, "t1", schedule as never)), ErrorCode.Validation);
      }
      await expectCode(backend.loadSnapshot(id), ErrorCode.NotFound);
      for (const queues of [[], [""], "default", [7]]) {
        await expectCode(backend.findAvailableTasks("w", 1, { queues } as never), ErrorCode.Validation);
        await expectCode(
          backend.claimAvailableTasks("w", 1, 1000, { queues } as never),
          ErrorCode.Validation,
        );
      }
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      const bad: unknown[] = [
        [{ claim, error: 42, retryAt: null }],
        [{ claim, error: "x" }],
        [{ claim, error: "x", retryAt: -5 }],
        [
          { claim, error: "x", retryAt: null },
          { claim, error: "y", retryAt: null },
        ],
        "not an array",
      ];
      for (const failures of bad)
        expect(await rejection(backend.failTasks(failures as never))).toMatchObject({
          code: ErrorCode.Validation,
        });
      expect((await backend.loadSnapshot(id)).attempts).toBeUndefined();
      expect(await backend.failTasks([])).toEqual([]);
    });

    // Found by the differential fuzzer with short leases (issue 20): SQLite and PostgreSQL counted
    // the lapsed claim in discovery already.
    it("discovery shows attempt 1 over a lapsed claim nobody took over; the takeover's claim-next says 2", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const ttl = 300;
      const [first] = await backend.claimAvailableTasks("crashed", 1, ttl);
      expect(first?.attempt).toBe(1);
      await sleep(ttl + expirySlackMs(backend));
      const seen = await eventually("the lapsed claim's task in discovery", async () => {
        const [task] = await backend.findAvailableTasks("w", 10);
        return task?.instanceId === id ? task : undefined;
      });
      expect(seen.attempt).toBe(1);
      const [taken] = await backend.claimAvailableTasks("taker", 1, 60_000);
      expect({ id: taken?.instanceId, attempt: taken?.attempt }).toEqual({ id, attempt: 2 });
    });

    // Found by the differential fuzzer (issue 20): DynamoDB made such a task ready again.
    it("failTasks on a claim of a task that already has its result does not make the task ready", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1", { completed: { t1: text("done") } }));
      const claim = await claimOrFail(backend, id, "t1", "w", 60_000);
      expect(await backend.failTasks([{ claim, error: "late", retryAt: Date.now() - 1_000 }])).toEqual([
        null,
      ]);
      expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
      expect(await backend.claimAvailableTasks("w", 10, 60_000)).toEqual([]);
      expect((await backend.loadSnapshot(id)).attempts?.t1?.count).toBe(1);
    });
  });
}
