import { describe, expect, it } from "vitest";
import type { PersistentBackend, TaskCompletion } from "../../backend.js";
import type { AvailableTask, TaskClaim } from "../../claims.js";
import { ErrorCode, ValidationError } from "../../errors.js";
import { applyStep, markCompleted, type NextStep, type WorkflowSnapshot } from "../../snapshot.js";
import { atTask, awaiting, comparable } from "../fixtures.js";
import {
  beforeDeadline,
  claimOrFail,
  eventually,
  expectCode,
  expirySlackMs,
  text,
  uid,
  useSubject,
} from "../harness.js";
import type { ConformanceOptions } from "../types.js";

// completeTasks with `next`: one fenced write per workflow step. The reference for every case is
// the snapshot a fenced saveSnapshot of applyStep(loaded, ...) would have written.

const dec = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? undefined : new TextDecoder().decode(bytes);

async function findIn(
  backend: PersistentBackend,
  prefix: string,
  queues?: string[],
): Promise<AvailableTask[]> {
  const found = await backend.findAvailableTasks(
    "observer",
    1000,
    queues === undefined ? undefined : { queues },
  );
  return found.filter((t) => t.instanceId.startsWith(prefix));
}

function step(
  claim: TaskClaim,
  output: string,
  next: NextStep,
  extra: Partial<TaskCompletion> = {},
): TaskCompletion {
  return { claim, output: text(output), next, ...extra };
}

/** The loaded snapshot without updatedAt (the store sets it) for equality with the reference. */
function shape(snapshot: WorkflowSnapshot): unknown {
  return comparable({ ...snapshot, updatedAt: 0 });
}

/** A workflow at t2 with t1's output "one" and initial input "in". */
function atT2(id: string): WorkflowSnapshot {
  return atTask(id, "t2", { completed: { t1: text("one") }, last: "t1", initialInput: text("in") });
}

export function stepsGroup(options: ConformanceOptions): void {
  describe("steps", () => {
    it("records the result, moves the workflow to the next task (ready with that output) and releases the claim", async () => {
      const { backend } = await useSubject(options);
      const id = uid("step");
      await backend.saveSnapshot(atT2(id));
      const before = await backend.loadSnapshot(id);
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const t0 = Date.now();
      expect(await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })])).toEqual([
        null,
      ]);
      const after = await backend.loadSnapshot(id);
      expect(shape(after)).toEqual(
        shape(applyStep(before, "t2", text("two"), { kind: "AtTask", taskId: "t3" }, 0)),
      );
      expect(after.updatedAt).toBeGreaterThanOrEqual(Math.min(before.updatedAt, t0 - expirySlackMs(backend)));
      const [task] = await findIn(backend, id);
      expect(task).toMatchObject({ instanceId: id, taskId: "t3", attempt: 1 });
      expect(dec(task?.input)).toBe("two");
      // The claim on t2 is gone: another worker may claim t2 at once.
      expect(await backend.claimTask(id, "t2", "worker-2", 30_000)).not.toBeNull();
    });

    it("a run of steps takes a workflow through its tasks to Completed; the next tasks are served in step order", async () => {
      const { backend } = await useSubject(options);
      const p = uid("run");
      for (const name of ["a", "b"])
        await backend.saveSnapshot(atTask(`${p}-${name}`, "t1", { initialInput: text(name) }));
      // b steps first, then a: b's next task became ready first and is served first.
      for (const name of ["b", "a"]) {
        const claim = await claimOrFail(backend, `${p}-${name}`, "t1", "worker-1");
        expect(
          await backend.completeTasks([step(claim, `${name}1`, { kind: "AtTask", taskId: "t2" })]),
        ).toEqual([null]);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect((await findIn(backend, p)).map((t) => t.instanceId)).toEqual([`${p}-b`, `${p}-a`]);
      for (const claimed of (await backend.claimAvailableTasks("worker-1", 10, 30_000)).filter((t) =>
        t.instanceId.startsWith(p),
      )) {
        const out = `${dec(claimed.input)}>2`;
        expect(
          await backend.completeTasks([
            step(claimed.claim, out, { kind: "Completed", finalOutput: text(out) }),
          ]),
        ).toEqual([null]);
      }
      for (const name of ["a", "b"]) {
        const done = await backend.loadSnapshot(`${p}-${name}`);
        expect(done.state).toMatchObject({ kind: "Completed" });
        expect(dec(done.state.kind === "Completed" ? done.state.finalOutput : undefined)).toBe(`${name}1>2`);
        expect(done.initialInput).toEqual(text(name));
      }
      expect(await findIn(backend, p)).toEqual([]);
    });

    it("a step to Completed or Failed finishes the workflow: as a terminal saveSnapshot, events dropped, not served", async () => {
      const { backend } = await useSubject(options);
      const p = uid("end");
      await backend.saveSnapshot(atT2(`${p}-c`));
      await backend.saveSnapshot(atT2(`${p}-f`));
      await backend.sendEvent(`${p}-c`, "late", text("x"));
      const before = await backend.loadSnapshot(`${p}-c`);
      const c = await claimOrFail(backend, `${p}-c`, "t2", "worker-1");
      const f = await claimOrFail(backend, `${p}-f`, "t2", "worker-1");
      expect(
        await backend.completeTasks([
          step(c, "two", { kind: "Completed", finalOutput: text("final") }),
          step(f, "two", { kind: "Failed", error: "gave up" }),
        ]),
      ).toEqual([null, null]);
      expect(shape(await backend.loadSnapshot(`${p}-c`))).toEqual(
        shape(markCompleted(before, text("final"), 0)),
      );
      expect((await backend.loadSnapshot(`${p}-f`)).state).toEqual({ kind: "Failed", error: "gave up" });
      expect(await backend.loadPendingEvents(`${p}-c`)).toEqual([]);
      await expectCode(backend.sendEvent(`${p}-c`, "late", text("y")), ErrorCode.Conflict);
      expect(await findIn(backend, p)).toEqual([]);
    });

    it("schedules the next task by its runAt, priority and queue", async () => {
      const { backend } = await useSubject(options);
      const id = uid("sched");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const runAt = Date.now() + 400;
      const next: NextStep = { kind: "AtTask", taskId: "t3", runAt, priority: 1, queue: "gpu" };
      expect(await backend.completeTasks([step(claim, "two", next)])).toEqual([null]);
      await beforeDeadline(
        runAt,
        () => findIn(backend, id, ["gpu"]),
        (found) => expect(found).toEqual([]),
      );
      const task = await eventually(
        "the next task to come due",
        async () => (await findIn(backend, id, ["gpu"]))[0],
      );
      expect(Date.now()).toBeGreaterThanOrEqual(runAt - expirySlackMs(backend));
      expect(task).toMatchObject({ taskId: "t3", priority: 1, queue: "gpu" });
      expect(await findIn(backend, id)).toEqual([]);
      const state = (await backend.loadSnapshot(id)).state;
      expect(state.kind === "InProgress" ? state.position : undefined).toEqual(next);
    });

    it("a step to a wait; the step after it consumes the oldest event of its name in the same write", async () => {
      const { backend } = await useSubject(options);
      const id = uid("wait");
      await backend.saveSnapshot(atT2(id));
      const first = await claimOrFail(backend, id, "t2", "worker-1");
      const wait: NextStep = {
        kind: "AwaitingEvent",
        eventName: "approval",
        nextTaskId: "t3",
        timeoutAt: null,
      };
      expect(await backend.completeTasks([step(first, "two", wait)])).toEqual([null]);
      expect(await findIn(backend, id)).toEqual([]);
      const one = await backend.sendEvent(id, "approval", text("yes"));
      await backend.sendEvent(id, "approval", text("again"));
      const [claimed] = (await backend.claimAvailableTasks("worker-1", 100, 30_000)).filter(
        (t) => t.instanceId === id,
      );
      expect(claimed).toMatchObject({ taskId: "t3", event: { eventName: "approval", sequence: one } });
      if (claimed?.event === undefined) throw new Error("no event on the claimed task");
      expect(dec(claimed.input)).toBe("yes");
      const done: NextStep = { kind: "AtTask", taskId: "t4" };
      expect(
        await backend.completeTasks([step(claimed.claim, "three", done, { consumeEvent: claimed.event })]),
      ).toEqual([null]);
      expect((await backend.loadPendingEvents(id)).map((e) => dec(e.payload))).toEqual(["again"]);
      const [t4] = await findIn(backend, id);
      expect([t4?.taskId, dec(t4?.input)]).toEqual(["t4", "three"]);
    });

    it("refusals in order (NotFound, ClaimLost, Conflict: finished, paused, not at the task, event not pending) write nothing and keep the claim", async () => {
      const { backend } = await useSubject(options);
      const p = uid("refuse");
      const next: NextStep = { kind: "AtTask", taskId: "t3" };
      // Not at the task: the claim is on a side task.
      await backend.saveSnapshot(atT2(`${p}-side`));
      const side = await claimOrFail(backend, `${p}-side`, "t9", "worker-1");
      // Stale: a newer claim took the task over after a release.
      await backend.saveSnapshot(atT2(`${p}-stale`));
      const stale = await claimOrFail(backend, `${p}-stale`, "t2", "worker-1");
      await backend.releaseTaskClaim(`${p}-stale`, "t2", "worker-1");
      await claimOrFail(backend, `${p}-stale`, "t2", "worker-2");
      // Paused while the task runs.
      await backend.saveSnapshot(atT2(`${p}-paused`));
      const paused = await claimOrFail(backend, `${p}-paused`, "t2", "worker-1");
      await backend.pauseWorkflow(`${p}-paused`);
      // Finished while the task runs.
      await backend.saveSnapshot(atT2(`${p}-done`));
      const done = await claimOrFail(backend, `${p}-done`, "t2", "worker-1");
      await backend.saveSnapshot(markCompleted(atT2(`${p}-done`), text("f")));
      // An event that is not the oldest pending one of its name.
      await backend.saveSnapshot(awaiting(`${p}-ev`, "approval", "t2", { completed: { t1: text("one") } }));
      await backend.sendEvent(`${p}-ev`, "approval", text("a"));
      const newer = await backend.sendEvent(`${p}-ev`, "approval", text("b"));
      const ev = await claimOrFail(backend, `${p}-ev`, "t2", "worker-1");
      // Missing, with a stale-looking claim: NotFound wins.
      const missing = { ...side, instanceId: `${p}-missing` };
      const ids = ["side", "stale", "paused", "done", "ev"].map((k) => `${p}-${k}`);
      const before = await Promise.all(ids.map((i) => backend.loadSnapshot(i).then(shape)));
      const outcomes = await backend.completeTasks([
        step(side, "x", next),
        step(stale, "x", next),
        step(paused, "x", next),
        step(done, "x", next),
        step(ev, "x", next, { consumeEvent: { eventName: "approval", sequence: newer } }),
        step(missing, "x", next),
      ]);
      expect(outcomes.map((o) => o?.code)).toEqual([
        ErrorCode.Conflict,
        ErrorCode.ClaimLost,
        ErrorCode.Conflict,
        ErrorCode.Conflict,
        ErrorCode.Conflict,
        ErrorCode.NotFound,
      ]);
      expect(await Promise.all(ids.map((i) => backend.loadSnapshot(i).then(shape)))).toEqual(before);
      expect((await backend.loadPendingEvents(`${p}-ev`)).length).toBe(2);
      // The claims that were live are still held: nobody else can take them.
      for (const claim of [side, paused, ev]) {
        expect(await backend.claimTask(claim.instanceId, claim.taskId, "worker-3", 30_000)).toBeNull();
      }
      // Once resumed, the paused workflow's claim steps it on.
      await backend.resumeWorkflow(`${p}-paused`);
      expect(await backend.completeTasks([step(paused, "two", next)])).toEqual([null]);
    });

    it("keeps the attempts of the task, and a step after a wait's timeout needs no event", async () => {
      const { backend } = await useSubject(options);
      const id = uid("att");
      await backend.saveSnapshot(atT2(id));
      const first = await claimOrFail(backend, id, "t2", "worker-1");
      expect(await backend.failTasks([{ claim: first, error: "boom", retryAt: Date.now() }])).toEqual([null]);
      const [retry] = (await backend.claimAvailableTasks("worker-1", 100, 30_000)).filter(
        (t) => t.instanceId === id,
      );
      expect(retry).toMatchObject({ taskId: "t2", attempt: 2 });
      if (retry === undefined) throw new Error("the retry was not claimed");
      const wait: NextStep = {
        kind: "AwaitingEvent",
        eventName: "ok",
        nextTaskId: "t3",
        timeoutAt: Date.now() + 200,
      };
      expect(await backend.completeTasks([step(retry.claim, "two", wait)])).toEqual([null]);
      expect((await backend.loadSnapshot(id)).attempts?.t2).toMatchObject({ count: 1, lastError: "boom" });
      const timedOut = await eventually("the wait to time out", async () => {
        const [t] = (await backend.claimAvailableTasks("worker-1", 100, 30_000)).filter(
          (x) => x.instanceId === id,
        );
        return t;
      });
      expect(timedOut).toMatchObject({ taskId: "t3", timedOut: true });
      expect(
        await backend.completeTasks([step(timedOut.claim, "three", { kind: "Failed", error: "no answer" })]),
      ).toEqual([null]);
      expect((await backend.loadSnapshot(id)).state).toEqual({ kind: "Failed", error: "no answer" });
    });

    it("a next task that already has a result is not ready (as after a saveSnapshot)", async () => {
      const { backend } = await useSubject(options);
      const id = uid("has");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      await backend.saveTaskResult(id, "t3", text("early"));
      expect(await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })])).toEqual([
        null,
      ]);
      expect(await findIn(backend, id)).toEqual([]);
      const state = (await backend.loadSnapshot(id)).state;
      expect(
        state.kind === "InProgress"
          ? [state.lastCompletedTaskId, Object.keys(state.completedTasks).sort()]
          : state,
      ).toEqual(["t2", ["t1", "t2", "t3"]]);
    });

    it("plain completions and steps of one workflow in one call apply in call order", async () => {
      const { backend } = await useSubject(options);
      const p = uid("order");
      await backend.saveSnapshot(atT2(`${p}-a`));
      await backend.saveSnapshot(atT2(`${p}-b`));
      const claims = async (id: string) => [
        await claimOrFail(backend, id, "t2", "worker-1"),
        await claimOrFail(backend, id, "side", "worker-1"),
      ];
      const [a2, aSide] = await claims(`${p}-a`);
      const [b2, bSide] = await claims(`${p}-b`);
      if (a2 === undefined || aSide === undefined || b2 === undefined || bSide === undefined)
        throw new Error("claims");
      const outcomes = await backend.completeTasks([
        // a: the side result first, then the step to Completed (which drops it): both land.
        { claim: aSide, output: text("side") },
        step(a2, "two", { kind: "Completed", finalOutput: text("done") }),
        // b: the step to Completed first; the side result after it is refused (finished).
        step(b2, "two", { kind: "Completed", finalOutput: text("done") }),
        { claim: bSide, output: text("side") },
      ]);
      expect(outcomes.map((o) => o?.code ?? null)).toEqual([null, null, null, ErrorCode.Conflict]);
    });

    it("the task a wait runs can step even when it already has a result (the position runs it)", async () => {
      const { backend } = await useSubject(options);
      const id = uid("waited");
      await backend.saveSnapshot(
        awaiting(id, "approval", "t2", { completed: { t1: text("one"), t2: text("early") }, last: "t1" }),
      );
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      expect(await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3" })])).toEqual([
        null,
      ]);
      const [task] = await findIn(backend, id);
      expect([task?.taskId, dec(task?.input)]).toEqual(["t3", "two"]);
    });

    it("a bad next refuses the whole call before any I/O", async () => {
      const { backend } = await useSubject(options);
      const id = uid("bad");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "worker-1");
      const good = step(claim, "two", { kind: "AtTask", taskId: "t3" });
      const bad: unknown[] = [
        { ...good, next: { kind: "Elsewhere" } },
        { ...good, next: { kind: "AtTask", taskId: "" } },
        { ...good, next: { kind: "AtTask", taskId: "t3", priority: 9 } },
        { ...good, next: { kind: "AtTask", taskId: "t3", queue: "" } },
        { ...good, next: { kind: "Completed" } },
        { ...good, next: undefined, consumeEvent: { eventName: "e", sequence: 1 } },
        { ...good, consumeEvent: { eventName: "e", sequence: 0 } },
      ];
      for (const item of bad) {
        await expect(backend.completeTasks([good, item as TaskCompletion])).rejects.toBeInstanceOf(
          ValidationError,
        );
      }
      expect(shape(await backend.loadSnapshot(id))).toEqual(shape(atT2(id)));
      expect(await backend.completeTasks([good])).toEqual([null]);
    });

    it("concurrent steps from several clients: each workflow moves exactly once per task", async () => {
      const { backend, connect } = await useSubject(options);
      const p = uid("conc");
      const ids = Array.from({ length: 12 }, (_, i) => `${p}-${String(i).padStart(2, "0")}`);
      for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
      const clients = [backend, ...(await Promise.all([connect(), connect()]))];
      const stepped: string[] = [];
      await Promise.all(
        clients.map(async (client, n) => {
          for (let round = 0; round < 20; round++) {
            const claimed = (await client.claimAvailableTasks(`w${n}`, 3, 30_000)).filter((t) =>
              t.instanceId.startsWith(p),
            );
            if (claimed.length === 0 && stepped.length >= ids.length * 2) return;
            const outcomes = await client.completeTasks(
              claimed.map((t) =>
                step(
                  t.claim,
                  `${t.taskId}`,
                  t.taskId === "t1"
                    ? { kind: "AtTask", taskId: "t2" }
                    : { kind: "Completed", finalOutput: text("ok") },
                ),
              ),
            );
            for (const [i, o] of outcomes.entries())
              if (o === null) stepped.push(`${claimed[i]?.instanceId}/${claimed[i]?.taskId}`);
          }
        }),
      );
      expect(stepped.sort()).toEqual(ids.flatMap((id) => [`${id}/t1`, `${id}/t2`]).sort());
      for (const id of ids) expect((await backend.loadSnapshot(id)).state.kind).toBe("Completed");
    });
  });
}
