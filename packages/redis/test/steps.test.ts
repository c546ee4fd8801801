import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  applyStep,
  ErrorCode,
  encodeSnapshotHeader,
  type NextStep,
  type PersistentBackend,
  type TaskClaim,
  type TaskCompletion,
  updatePosition,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  atTask,
  beforeDeadline,
  claimOrFail,
  comparable,
  eventually,
  patternBytes,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RedisBackend, type RedisBackendOptions } from "../src/index.js";
import { MetaField } from "../src/layout.js";
import type { ScriptName } from "../src/scripts/index.js";
import { ReplicationStream } from "./replication.js";
import { createSubject, type RedisSubject, targets as servers, standalone, type Target } from "./subject.js";

/*
 * completeTasks with `next` on Redis, where the conformance kit does not look: what one step
 * writes (seen from the replication stream: the effects of the scripts) and what crosses the
 * network, how many scripts a step and a batch cost, and the races of the read-then-write: a
 * cancel, a pause, a sendEvent, a takeover after expiry or a header change between the read and
 * the write, a write whose reply is lost, and several clients stepping at once.
 */

const decode = (bytes: Uint8Array | undefined): string => new TextDecoder().decode(bytes);
const AT_T3: NextStep = { kind: "AtTask", taskId: "t3" };

function step(claim: TaskClaim, output: string | Uint8Array, next: NextStep): TaskCompletion {
  return { claim, output: typeof output === "string" ? text(output) : output, next };
}

/** A workflow at t2, with `t1` as t1's output and initial input "in". */
function atT2(id: string, t1: Uint8Array = text("one")): WorkflowSnapshot {
  return atTask(id, "t2", { completed: { t1 }, last: "t1", initialInput: text("in") });
}

/** The snapshot without updatedAt (the store sets it), for equality. */
const shape = (snapshot: WorkflowSnapshot) => comparable({ ...snapshot, updatedAt: 0 });

/** Records every script call of a backend (name, argument bytes, reply bytes), and runs `before` ahead of the chosen ones. */
interface Recorder {
  calls: Array<{ name: ScriptName; sent: number; received: number }>;
  /** Runs once before the next call of `name` (then the call goes on). */
  before(name: ScriptName, action: () => Promise<void>): void;
  /** The step scripts called since the last reset (in order). */
  names(): ScriptName[];
  reset(): void;
}

function recorder(): { recorder: Recorder; faults: Pick<RedisBackendOptions, "faults"> } {
  const calls: Recorder["calls"] = [];
  const pending = new Map<ScriptName, () => Promise<void>>();
  const size = (value: unknown): number => {
    if (value === null || value === undefined) return 0;
    if (Array.isArray(value)) return value.reduce((n: number, v) => n + size(v), 0);
    if (typeof value === "string") return Buffer.byteLength(value);
    if (value instanceof Uint8Array) return value.byteLength;
    return String(value).length;
  };
  const rec: Recorder = {
    calls,
    before: (name, action) => void pending.set(name, action),
    names: () => calls.map((c) => c.name).filter((n) => n === "loadSteps" || n === "completeSteps"),
    reset: () => void calls.splice(0),
  };
  const faults: Pick<RedisBackendOptions, "faults"> = {
    faults: {
      aroundScript: async (name, args, run) => {
        const action = pending.get(name);
        if (action !== undefined) {
          pending.delete(name);
          await action();
        }
        const reply = await run();
        calls.push({ name, sent: size(args), received: size(reply) });
        return reply;
      },
    },
  };
  return { recorder: rec, faults };
}

const subjects: RedisSubject[] = [];
const streams: ReplicationStream[] = [];

afterEach(async () => {
  for (const stream of streams.splice(0)) stream.close();
  for (const subject of subjects.splice(0)) {
    await subject.backend.close();
    await subject.cleanup();
  }
});

/** A subject on `target` whose script calls are recorded (those of its connect() clients too). */
async function recorded(
  target: Target,
  extra: Partial<RedisBackendOptions> = {},
): Promise<RedisSubject & { recorder: Recorder }> {
  const { recorder: rec, faults } = recorder();
  const where = target.kind === "standalone" ? { url: target.url } : { cluster: { nodes: target.nodes } };
  const subject = await createSubject({}, { ...where, ...faults, ...extra });
  subjects.push(subject);
  return { ...subject, recorder: rec };
}

describe.skipIf(standalone === null)("what a step writes (standalone, replication stream)", () => {
  it("a step writes this task's output and the header fields; another output is neither sent, returned nor written", async () => {
    const target = servers.standalone as Target & { kind: "standalone" };
    const { backend, recorder: rec } = await recorded(target);
    const id = uid("big");
    const big = patternBytes(2 * 1024 * 1024, 7);
    await backend.saveSnapshot(atT2(id, big));
    const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
    const stream = await ReplicationStream.open(target.url);
    streams.push(stream);
    rec.reset();

    expect(await backend.completeTasks([step(claim, "two", AT_T3)])).toEqual([null]);
    await stream.settle();
    // Over the network: the read answers the header and a few fields, the write carries this
    // output and the new header: far less than the 2 MiB output of t1 in both directions.
    expect(rec.names()).toEqual(["loadSteps", "completeSteps"]);
    for (const call of rec.calls) {
      expect(call.sent).toBeLessThan(4096);
      expect(call.received).toBeLessThan(4096);
    }
    // On the server: the writes of the step name this task's output field, never t1's.
    const writes = stream.take(id);
    const key = backend.layout.instance(id).meta;
    const onInstance = writes.filter((c) => c[1] === key);
    expect(onInstance.map((c) => c[0]?.toLowerCase())).toEqual(["hset"]);
    const fields = (onInstance[0] ?? []).filter((_, i) => i >= 2 && i % 2 === 0);
    expect(fields).toContain("r:t2");
    expect(fields).toContain(`c:t2`);
    for (const command of writes) expect(command).not.toContain("r:t1");
    expect(writes.flat().some((arg) => arg.length >= big.length)).toBe(false);

    // The stored snapshot is the reference step's, t1's 2 MiB output included.
    const loaded = await backend.loadSnapshot(id);
    expect(shape(loaded)).toEqual(shape(applyStep(atT2(id, big), "t2", text("two"), AT_T3, 0)));
  });

  it("a step to Completed deletes the outputs (their field names are read, not their values) and leaves every set", async () => {
    const target = servers.standalone as Target & { kind: "standalone" };
    const { backend } = await recorded(target);
    const id = uid("end");
    await backend.saveSnapshot(atT2(id, patternBytes(1024 * 1024, 3)));
    await backend.sendEvent(id, "late", text("x"));
    const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
    const stream = await ReplicationStream.open(target.url);
    streams.push(stream);
    expect(
      await backend.completeTasks([step(claim, "two", { kind: "Completed", finalOutput: text("done") })]),
    ).toEqual([null]);
    await stream.settle();
    const writes = stream.take(id);
    const k = backend.layout.instance(id);
    const deleted = writes
      .filter((c) => c[0]?.toLowerCase() === "hdel" && c[1] === k.meta)
      .flatMap((c) => c.slice(2));
    expect(deleted).toContain("r:t1");
    // The new output is not written: a finished workflow keeps no results.
    expect(writes.flat()).not.toContain("r:t2");
    const loaded = await backend.loadSnapshot(id);
    expect(loaded.state).toMatchObject({ kind: "Completed" });
    expect(loaded.initialInput).toEqual(text("in"));
    for (const set of [k.ready, k.leased, k.timers]) expect(await backend.client.zscore(set, id)).toBeNull();
    expect(await backend.client.exists(k.events, k.eventOrder)).toBe(0);
  });

  it("saveSnapshot writes only the outputs that changed and deletes only those removed", async () => {
    const target = servers.standalone as Target & { kind: "standalone" };
    const { backend } = await recorded(target);
    const id = uid("save");
    const big = patternBytes(1024 * 1024, 5);
    const first = atTask(id, "t4", {
      completed: { t1: big, t2: text("two"), t3: text("three") },
      last: "t3",
    });
    await backend.saveSnapshot(first);
    const stream = await ReplicationStream.open(target.url);
    streams.push(stream);
    // t2 changes, t3 goes, t1 (1 MiB) stays as it was.
    const second = atTask(id, "t4", { completed: { t1: big, t2: text("TWO") }, last: "t2" });
    await backend.saveSnapshot(second);
    await stream.settle();
    const writes = stream.take(id);
    const key = backend.layout.instance(id).meta;
    const onInstance = writes.filter((c) => c[1] === key);
    const written = onInstance
      .filter((c) => c[0]?.toLowerCase() === "hset")
      .flatMap((c) => c.filter((_, i) => i >= 2 && i % 2 === 0));
    const deleted = onInstance.filter((c) => c[0]?.toLowerCase() === "hdel").flatMap((c) => c.slice(2));
    expect(written).toContain("r:t2");
    expect(written).not.toContain("r:t1");
    expect(deleted).toEqual(["r:t3"]);
    expect(writes.flat().some((arg) => arg.length >= big.length)).toBe(false);
    expect(shape(await backend.loadSnapshot(id))).toEqual(shape(second));
  });
});

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`steps: scripts per call and races (${name})`, () => {
    const t = target as Target;

    it("a step is two scripts (read, write); a batch too on standalone, two per shard on a cluster, beside the plain completions' one", async () => {
      const { backend, recorder: rec } = await recorded(t, t.kind === "standalone" ? { shards: 4 } : {});
      const p = uid("rt");
      const ids = Array.from({ length: 10 }, (_, i) => `${p}-${i}`);
      for (const id of ids) await backend.saveSnapshot(atT2(id));
      const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t2", "w", 60_000)));
      rec.reset();
      expect(await backend.completeTasks([step(claims[0] as TaskClaim, "x", AT_T3)])).toEqual([null]);
      expect(rec.names()).toEqual(["loadSteps", "completeSteps"]);

      rec.reset();
      const steps = claims.slice(1, 7);
      const plain = claims.slice(7);
      const shards = new Set(steps.map((c) => backend.layout.shardOf(c.instanceId)));
      const plainShards = new Set(plain.map((c) => backend.layout.shardOf(c.instanceId)));
      expect(shards.size).toBeGreaterThan(1);
      const outcomes = await backend.completeTasks([
        ...steps.map((c) => step(c, "x", AT_T3)),
        ...plain.map((claim) => ({ claim, output: text("x") })),
      ]);
      expect(outcomes).toEqual(claims.slice(1).map(() => null));
      const count = (n: ScriptName) => rec.calls.filter((x) => x.name === n).length;
      const perCall = t.kind === "standalone";
      expect(count("loadSteps")).toBe(perCall ? 1 : shards.size);
      expect(count("completeSteps")).toBe(perCall ? 1 : shards.size);
      expect(count("completeTasks")).toBe(perCall ? 1 : plainShards.size);
      expect(rec.calls).toHaveLength(perCall ? 3 : 2 * shards.size + plainShards.size);
      const found = await backend.findAvailableTasks("w", 100);
      expect(
        found
          .filter((f) => f.instanceId.startsWith(p))
          .map((f) => f.taskId)
          .sort(),
      ).toEqual(Array(7).fill("t3"));
    });

    it("step vs cancel: a cancel between the read and the write wins; the step is ClaimLost and writes nothing", async () => {
      const { backend, recorder: rec, connect } = await recorded(t);
      const other = await connect();
      const id = uid("cancel");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
      rec.before("completeSteps", async () => other.cancelWorkflow(id, { reason: "stop" }));
      const [outcome] = await backend.completeTasks([step(claim, "two", AT_T3)]);
      await other.close();
      expect(outcome?.code).toBe(ErrorCode.ClaimLost);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind).toBe("Cancelled");
      expect(loaded.state.kind === "Cancelled" ? Object.keys(loaded.state.completedTasks) : []).toEqual([
        "t1",
      ]);
      expect(await backend.findAvailableTasks("w", 100)).toEqual([]);
    });

    it("step vs pause: a pause between the read and the write makes the step read again and refuse (Conflict), keeping the claim", async () => {
      const { backend, recorder: rec, connect } = await recorded(t);
      const other = await connect();
      const id = uid("pause");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
      const before = shape(await backend.loadSnapshot(id));
      rec.before("completeSteps", async () => other.pauseWorkflow(id, { reason: "hold" }));
      rec.reset();
      const [outcome] = await backend.completeTasks([step(claim, "two", AT_T3)]);
      expect(outcome?.code).toBe(ErrorCode.Conflict);
      expect(outcome?.message).toContain("paused");
      // Read, write (CHANGED), read again: refused before a second write.
      expect(rec.names()).toEqual(["loadSteps", "completeSteps", "loadSteps"]);
      expect(await other.claimTask(id, "t2", "w2", 60_000)).toBeNull();
      await other.resumeWorkflow(id);
      await other.close();
      expect(shape(await backend.loadSnapshot(id))).toEqual(before);
      expect(await backend.completeTasks([step(claim, "two", AT_T3)])).toEqual([null]);
    });

    it("step vs a header change: a fenced saveSnapshot between the read and the write is stepped from, not overwritten", async () => {
      const { backend, recorder: rec } = await recorded(t);
      const id = uid("changed");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
      const moved = atTask(id, "t2", {
        completed: { t1: text("one"), side: text("s") },
        last: "side",
        initialInput: text("in"),
      });
      rec.before("completeSteps", async () =>
        backend.saveSnapshot(
          updatePosition(moved, { kind: "AtTask", taskId: "t2", priority: 1 }, moved.updatedAt),
          { claim },
        ),
      );
      rec.reset();
      expect(await backend.completeTasks([step(claim, "two", AT_T3)])).toEqual([null]);
      expect(rec.names()).toEqual(["loadSteps", "completeSteps", "loadSteps", "completeSteps"]);
      const state = (await backend.loadSnapshot(id)).state;
      expect(state.kind === "InProgress" ? Object.keys(state.completedTasks).sort() : state).toEqual([
        "side",
        "t1",
        "t2",
      ]);
    });

    it("step vs sendEvent: an event sent between the read and the write wakes the wait the step moves to", async () => {
      const { backend, recorder: rec, connect } = await recorded(t);
      const other = await connect();
      const id = uid("event");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
      let sequence = 0;
      rec.before("completeSteps", async () => {
        sequence = await other.sendEvent(id, "go", text("payload"));
      });
      const wait: NextStep = { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t3", timeoutAt: null };
      expect(await backend.completeTasks([step(claim, "two", wait)])).toEqual([null]);
      const [task] = (await other.claimAvailableTasks("w2", 10, 60_000)).filter((x) => x.instanceId === id);
      expect(task).toMatchObject({ taskId: "t3", event: { eventName: "go", sequence } });
      expect(decode(task?.input)).toBe("payload");
      // The step after the wait consumes that event; one sent meanwhile stays pending.
      if (task?.event === undefined) throw new Error("no event");
      rec.before("completeSteps", async () => void (await other.sendEvent(id, "go", text("later"))));
      expect(
        await backend.completeTasks([
          { ...step(task.claim, "three", { kind: "AtTask", taskId: "t4" }), consumeEvent: task.event },
        ]),
      ).toEqual([null]);
      expect((await backend.loadPendingEvents(id)).map((e) => decode(e.payload))).toEqual(["later"]);
      await other.close();
    });

    it("step vs a claim-next takeover after expiry: the stale step is ClaimLost and writes nothing; the new holder steps", async () => {
      const { backend, recorder: rec, connect } = await recorded(t);
      const other = await connect();
      const id = uid("takeover");
      await backend.saveSnapshot(atT2(id));
      // The state as it was (a takeover by claim-next counts an attempt: the attempts move).
      const state = async () => {
        const { attempts: _, ...rest } = await backend.loadSnapshot(id);
        return shape(rest);
      };
      const before = await state();
      // Expired and taken over before the call: refused on what the read found.
      const stale = await claimOrFail(backend, id, "t2", "w1", 200);
      await sleep(300);
      const [taken] = (await other.claimAvailableTasks("w2", 10, 60_000)).filter((x) => x.instanceId === id);
      expect(taken?.taskId).toBe("t2");
      rec.reset();
      expect((await backend.completeTasks([step(stale, "stale", AT_T3)]))[0]?.code).toBe(ErrorCode.ClaimLost);
      expect(rec.names()).toEqual(["loadSteps"]);
      expect(await state()).toEqual(before);
      // Expired and taken over between the read and the write: refused by the write.
      if (taken === undefined) throw new Error("no takeover");
      await other.releaseTaskClaim(id, "t2", "w2");
      // 1 s: the step's read must come before the expiry even on a loaded machine.
      const second = await claimOrFail(backend, id, "t2", "w1", 1_000);
      let third: TaskClaim | undefined;
      rec.before("completeSteps", async () => {
        await sleep(Math.max(0, (second.expiresAt ?? 0) - Date.now()) + 100);
        [third] = (await other.claimAvailableTasks("w3", 10, 60_000))
          .filter((x) => x.instanceId === id)
          .map((x) => x.claim);
      });
      expect((await backend.completeTasks([step(second, "stale", AT_T3)]))[0]?.code).toBe(
        ErrorCode.ClaimLost,
      );
      expect(await state()).toEqual(before);
      if (third === undefined) throw new Error("no second takeover");
      expect(await other.completeTasks([step(third, "fresh", AT_T3)])).toEqual([null]);
      const after = (await backend.loadSnapshot(id)).state;
      expect(after.kind === "InProgress" ? decode(after.completedTasks.t2?.output) : after).toBe("fresh");
      await other.close();
    });

    it("a write whose reply is lost and that runs again answers OK and steps once", async () => {
      const { backend, keyPrefix } = await recorded(t);
      const id = uid("again");
      await backend.saveSnapshot(atT2(id));
      const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
      // Another client on the same store whose hook runs the write twice (a client re-sending it
      // after a lost reply) and answers the second run.
      let runs = 0;
      const twice = await createSubject(
        {},
        {
          ...(t.kind === "standalone" ? { url: t.url } : { cluster: { nodes: t.nodes } }),
          keyPrefix,
          faults: {
            aroundScript: async (name, _args, run) => {
              if (name !== "completeSteps") return run();
              runs++;
              await run();
              return run();
            },
          },
        },
      );
      expect(await twice.backend.completeTasks([step(claim, "two", AT_T3)])).toEqual([null]);
      await twice.backend.close();
      expect(runs).toBe(1);
      const loaded = await backend.loadSnapshot(id);
      expect(shape(loaded)).toEqual(shape(applyStep(atT2(id), "t2", text("two"), AT_T3, 0)));
      expect(await backend.findAvailableTasks("w", 10)).toMatchObject([{ instanceId: id, taskId: "t3" }]);
    });

    it("several clients step different workflows at once: each task steps exactly once, all end Completed, no index entry left", async () => {
      const { backend, connect } = await recorded(t);
      const clients: PersistentBackend[] = [
        backend,
        ...(await Promise.all([connect(), connect(), connect()])),
      ];
      const p = uid("many");
      const ids = Array.from({ length: 24 }, (_, i) => `${p}-${String(i).padStart(2, "0")}`);
      for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
      const order = ["t1", "t2", "t3"];
      const stepped: string[] = [];
      await Promise.all(
        clients.map(async (client, n) => {
          for (let round = 0; round < 200 && stepped.length < ids.length * order.length; round++) {
            const claimed = (await client.claimAvailableTasks(`w${n}`, 4, 60_000)).filter((x) =>
              x.instanceId.startsWith(p),
            );
            if (claimed.length === 0) {
              await sleep(5);
              continue;
            }
            const outcomes = await client.completeTasks(
              claimed.map((x) => {
                const at = order.indexOf(x.taskId);
                const next: NextStep =
                  at === order.length - 1
                    ? { kind: "Completed", finalOutput: text(`${decode(x.input)}>${x.taskId}`) }
                    : { kind: "AtTask", taskId: order[at + 1] as string, priority: 1 + (at % 5) };
                return step(x.claim, `${decode(x.input)}>${x.taskId}`, next);
              }),
            );
            for (const [i, o] of outcomes.entries()) {
              expect(o).toBeNull();
              stepped.push(`${claimed[i]?.instanceId}/${claimed[i]?.taskId}`);
            }
          }
        }),
      );
      for (const client of clients.slice(1)) await client.close();
      expect(stepped.sort()).toEqual(ids.flatMap((id) => order.map((task) => `${id}/${task}`)).sort());
      for (const id of ids) {
        const done = await backend.loadSnapshot(id);
        expect(done.state.kind === "Completed" ? decode(done.state.finalOutput) : done.state.kind).toBe(
          `${id}>t1>t2>t3`,
        );
      }
      expect((await backend.findAvailableTasks("w", 100)).filter((x) => x.instanceId.startsWith(p))).toEqual(
        [],
      );
    });
  });
}

describe.skipIf(standalone === null)("timers and older records (standalone)", () => {
  it("a step to a future runAt files the next task in the timer set until then", async () => {
    const { backend } = await recorded(servers.standalone as Target);
    const id = uid("timer");
    await backend.saveSnapshot(atT2(id));
    const claim = await claimOrFail(backend, id, "t2", "w", 60_000);
    const runAt = Date.now() + 300;
    expect(
      await backend.completeTasks([step(claim, "two", { kind: "AtTask", taskId: "t3", runAt })]),
    ).toEqual([null]);
    await beforeDeadline(
      runAt,
      () => backend.findAvailableTasks("w", 10),
      (found) => expect(found).toEqual([]),
    );
    const task = await eventually(
      "the next task to come due",
      async () => (await backend.findAvailableTasks("w", 10))[0],
    );
    expect(task).toMatchObject({ instanceId: id, taskId: "t3" });
  });

  it("records written before the initial input had a field of its own: a step stores it once, in a batch with others", async () => {
    const { backend } = await recorded(servers.standalone as Target);
    const p = uid("legacy");
    const ids = [`${p}-a`, `${p}-b`, `${p}-c`];
    for (const id of ids) {
      const k = backend.layout.instance(id);
      const snapshot = atT2(id);
      await backend.saveSnapshot(snapshot);
      if (id !== `${p}-b`) {
        await backend.client.hdel(k.meta, MetaField.status, MetaField.positionTask, MetaField.initialInput);
        await backend.client.hset(k.meta, MetaField.header, Buffer.from(encodeSnapshotHeader(snapshot)));
      }
    }
    const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t2", "w", 60_000)));
    const [a, b, c] = claims as [TaskClaim, TaskClaim, TaskClaim];
    expect(
      await backend.completeTasks([
        step(a, "two-a", AT_T3),
        step(b, "two-b", AT_T3),
        step(c, "two-c", { kind: "Failed", error: "no" }),
      ]),
    ).toEqual([null, null, null]);
    for (const id of ids) {
      expect(
        decode(
          (await backend.client.hgetBuffer(backend.layout.instance(id).meta, MetaField.initialInput)) ??
            undefined,
        ),
      ).toBe("in");
      expect((await backend.loadSnapshot(id)).initialInput).toEqual(text("in"));
    }
    const found = (await backend.findAvailableTasks("w", 10)).filter((f) => f.instanceId.startsWith(p));
    expect(found.map((f) => [f.instanceId, f.taskId, decode(f.input)]).sort()).toEqual([
      [`${p}-a`, "t3", "two-a"],
      [`${p}-b`, "t3", "two-b"],
    ]);
    expect((await backend.loadSnapshot(`${p}-c`)).state).toEqual({ kind: "Failed", error: "no" });
  });
});

/*
 * Server commands per step, on a redis-server of this test's own (INFO commandstats counts every
 * command of every client, so the shared server's would mix in other files' work).
 */
const serverBin = process.env.SAYIIR_TEST_REDIS_SERVER_BIN ?? "redis-server";
const haveServer = spawnSync(serverBin, ["--version"]).status === 0;

describe.skipIf(!haveServer)("server commands per step (own redis-server, INFO commandstats)", () => {
  let child: ChildProcess | undefined;
  let dir = "";
  let url = "";

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "sayiir-redis-steps-"));
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const address = probe.address();
        probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
      });
    });
    child = spawn(serverBin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir], {
      stdio: "ignore",
    });
    url = `redis://127.0.0.1:${port}`;
    await eventually("the own redis-server to answer", async () => {
      const probe = new Redis(url, { lazyConnect: true, retryStrategy: () => null });
      probe.on("error", () => {});
      try {
        await probe.connect();
        return (await probe.ping()) === "PONG" ? true : undefined;
      } catch {
        return undefined;
      } finally {
        probe.disconnect();
      }
    });
  });

  afterAll(async () => {
    child?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  /** The calls per command since the last reset (the stats commands themselves left out). */
  async function commands(admin: Redis): Promise<Record<string, number>> {
    const info = String(await admin.info("commandstats"));
    const out: Record<string, number> = {};
    for (const [, name, calls] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      if (name === undefined || name.startsWith("config") || name === "info") continue;
      out[name] = Number(calls);
    }
    await admin.config("RESETSTAT");
    return out;
  }

  it("a batch of n steps is 2 scripts and the same commands per step, however many and large the other outputs", async () => {
    const backend = new RedisBackend({ url, keyPrefix: uid("stats") });
    const admin = new Redis(url);
    try {
      const n = 8;
      const small = Array.from({ length: n + 1 }, (_, i) => `small-${i}`);
      const large = Array.from({ length: n }, (_, i) => `large-${i}`);
      const outputs: Record<string, Uint8Array> = {};
      for (let i = 0; i < 40; i++) outputs[`o${i}`] = patternBytes(64 * 1024, i);
      for (const id of small) await backend.saveSnapshot(atT2(id));
      for (const id of large)
        await backend.saveSnapshot(
          atTask(id, "t2", { completed: { ...outputs, t1: text("one") }, last: "t1" }),
        );
      const batch = async (ids: string[]) => {
        const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t2", "w", 60_000)));
        await commands(admin);
        expect(await backend.completeTasks(claims.map((c) => step(c, "two", AT_T3)))).toEqual(
          ids.map(() => null),
        );
        return commands(admin);
      };
      // The scripts are loaded on the connection by a first step (EVALSHA, NOSCRIPT, EVAL).
      await batch(small.slice(n));
      const onSmall = await batch(small.slice(0, n));
      const onLarge = await batch(large);
      // Per batch: the read and the write (one EVALSHA each), each asking Redis's TIME once. Per
      // step: read HMGET + HEXISTS (the next task); write HMGET + HEXISTS + HSET, then the ready
      // index (HGET of the next task's claim field, ZREM from the lease set, ZADD to ready). Per
      // script call one PUBLISH of each queue it made a task ready in (wake-ups): here one queue.
      expect(onSmall).toEqual({
        publish: 1,
        evalsha: 2,
        time: 2,
        hmget: 2 * n,
        hexists: 2 * n,
        hset: n,
        hget: n,
        zrem: n,
        zadd: n,
      });
      expect(onLarge).toEqual(onSmall);
    } finally {
      await backend.close();
      admin.disconnect();
    }
  });
});
