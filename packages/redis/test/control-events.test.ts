import {
  BackendError,
  ConflictError,
  ErrorCode,
  encodeSnapshotHeader,
  failures,
  markTaskCompleted,
  updatePosition,
} from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import {
  atTask,
  awaiting,
  beforeDeadline,
  eventually,
  expectCode,
  finished,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import type { RedisBackend, RedisBackendOptions } from "../src/index.js";
import { EventField, FieldPrefix, MetaField } from "../src/layout.js";
import { Code, type FaultHooks, refusal, type ScriptName } from "../src/scripts/index.js";
import { adminClient, createSubject, type RedisSubject, targets as servers, type Target } from "./subject.js";

/*
 * What the conformance kit cannot see of cancel, pause, resume and events on Redis: the event
 * records and the timer set, the result codes of the control scripts (CHANGED and its re-read,
 * a second run of the same call), records written before this release, and the cost of claim-next.
 */

const decode = (bytes: Uint8Array | undefined): string => new TextDecoder().decode(bytes);
const NUL = "\u0000";
const seq16 = (n: number): string => String(n).padStart(16, "0");

describe("result codes (no server needed)", () => {
  it("every code is distinct, completion's are single digits, and each maps to the core's failure", () => {
    const values = Object.values(Code);
    expect(new Set(values).size).toBe(values.length);
    for (const code of [Code.ok, Code.fenceRejected, Code.resultsFinal, Code.snapshotNotFound]) {
      expect(String(code)).toHaveLength(1);
    }
    const id = "wf-1";
    expect(refusal(Code.pausedCannotMove, { instanceId: id })).toBeInstanceOf(ConflictError);
    expect(
      refusal(Code.eventNotPending, { instanceId: id, event: { eventName: "e", sequence: 3 } }),
    ).toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringContaining("not the oldest pending event"),
    });
    expect(refusal(Code.eventsClosed, { instanceId: id, status: "Cancelled" })).toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringContaining("Cancelled"),
    });
    expect(refusal(Code.cancelledIsFinal, { instanceId: id })).toEqual(failures.cancelledIsFinal(id));
    expect(refusal(Code.claimRevoked, { instanceId: id, taskId: "t1" })).toEqual(
      failures.claimRevoked(id, "t1"),
    );
    // Codes that need more than the instance, or that are no failure (CHANGED: read again).
    expect(refusal(Code.eventNotPending, { instanceId: id })).toBeInstanceOf(BackendError);
    expect(refusal(Code.eventsClosed, { instanceId: id })).toBeInstanceOf(BackendError);
    expect(refusal(Code.changed, { instanceId: id })).toBeInstanceOf(BackendError);
    expect(refusal(Code.claimRevoked, { instanceId: id })).toBeInstanceOf(BackendError);
  });
});

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

/** Observes and changes script calls of one backend through its fault hooks. */
function around(
  hook: (name: ScriptName, run: () => Promise<unknown>) => Promise<unknown>,
): Pick<RedisBackendOptions, "faults"> {
  const faults: FaultHooks = { aroundScript: (name, _args, run) => hook(name, run) };
  return { faults };
}

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`control and events (${name})`, () => {
    const t = target as Target;
    const opened: RedisSubject[] = [];
    const others: RedisBackend[] = [];
    const subject = async (extra: Partial<RedisBackendOptions> = {}): Promise<RedisSubject> => {
      const s = await createSubject(
        {},
        { ...(t.kind === "standalone" ? { url: t.url } : { cluster: { nodes: t.nodes } }), ...extra },
      );
      opened.push(s);
      return s;
    };
    const connect = async (s: RedisSubject): Promise<RedisBackend> => {
      const b = (await s.connect()) as RedisBackend;
      others.push(b);
      return b;
    };
    afterEach(async () => {
      for (const b of others.splice(0)) await b.close();
      for (const s of opened.splice(0)) {
        await s.backend.close();
        await s.cleanup();
      }
    });

    it("event records: a per-instance counter, payloads by sequence, an order set by name; consumed with the write, dropped by a finished write, cancel and delete", async () => {
      const { backend } = await subject();
      const admin = adminClient(t) as Redis;
      try {
        const id = uid();
        const k = backend.layout.instance(id);
        const wait = awaiting(id, "e", "t1");
        await backend.saveSnapshot(wait);
        expect(await backend.sendEvent(id, "other", text("o"))).toBe(1);
        const before = Date.now();
        expect(await backend.sendEvent(id, "e", text("first"))).toBe(2);
        expect(await backend.sendEvent(id, "e", text("second"))).toBe(3);
        expect(await admin.hget(k.events, EventField.counter)).toBe("3");
        expect(await admin.hget(k.events, seq16(2))).toBe("first");
        const members = await admin.zrange(k.eventOrder, "0", "-1");
        expect(members.map((m) => m.split(NUL).slice(0, 2))).toEqual([
          ["e", seq16(2)],
          ["e", seq16(3)],
          ["other", seq16(1)],
        ]);
        const sentAt = Number(members[0]?.split(NUL)[2]);
        expect(sentAt).toBeGreaterThanOrEqual(before - 2_000);
        expect(
          (await backend.loadPendingEvents(id)).map((e) => [e.sequence, e.eventName, e.sentAt > 0]),
        ).toEqual([
          [1, "other", true],
          [2, "e", true],
          [3, "e", true],
        ]);
        // The write past the wait consumes the oldest "e" and nothing else.
        const [task] = await backend.claimAvailableTasks("w", 1, 60_000);
        expect(task?.event).toEqual({ eventName: "e", sequence: 2 });
        const past = updatePosition(markTaskCompleted(wait, "t1", text("r")), {
          kind: "AtTask",
          taskId: "t2",
        });
        await backend.saveSnapshot(past, { claim: task!.claim, consumeEvent: task!.event! });
        expect(await admin.hexists(k.events, seq16(2))).toBe(0);
        expect((await admin.zrange(k.eventOrder, "0", "-1")).map((m) => m.split(NUL)[1])).toEqual([
          seq16(3),
          seq16(1),
        ]);
        // The counter outlives the events consumed: sequences keep growing.
        expect(await backend.sendEvent(id, "late", text("x"))).toBe(4);
        // A finished write drops them all.
        await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("done") }));
        expect(await admin.exists(k.events, k.eventOrder)).toBe(0);
        // Cancel and delete too.
        for (const end of ["cancel", "delete"] as const) {
          const other = uid();
          const ko = backend.layout.instance(other);
          await backend.saveSnapshot(awaiting(other, "e", "t1"));
          await backend.sendEvent(other, "x", text("x"));
          expect(await admin.exists(ko.events, ko.eventOrder)).toBe(2);
          if (end === "cancel") await backend.cancelWorkflow(other);
          else await backend.deleteSnapshot(other);
          expect(await admin.exists(ko.events, ko.eventOrder)).toBe(0);
        }
      } finally {
        admin.disconnect();
      }
    });

    it("a wait with a timeout sits in the timer set until due, then is ready at score timeoutAt; claimed, it is not handed out again while the claim lives", async () => {
      const { backend } = await subject();
      const admin = adminClient(t) as Redis;
      try {
        const id = uid();
        const k = backend.layout.instance(id);
        const timeoutAt = Date.now() + 300;
        await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt }));
        expect(Number(await admin.zscore(k.timers, id))).toBe(timeoutAt);
        expect(await admin.zscore(k.ready, id)).toBeNull();
        await beforeDeadline(
          timeoutAt,
          () => backend.claimAvailableTasks("w", 10, 60_000),
          (claimed) => expect(claimed).toEqual([]),
        );
        await sleep(timeoutAt - Date.now() + 20);
        const [claimed] = await backend.claimAvailableTasks("w1", 10, 400);
        expect(claimed).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
        expect(claimed?.input.byteLength).toBe(0);
        expect(await admin.zscore(k.timers, id)).toBeNull();
        expect(await admin.zscore(k.ready, id)).toBeNull();
        expect(Number(await admin.zscore(k.leased, id))).toBe(claimed?.claim.expiresAt);
        // While the claim lives: neither claimed nor found again.
        const expiresAt = claimed?.claim.expiresAt ?? 0;
        await beforeDeadline(
          expiresAt,
          () => backend.claimAvailableTasks("w2", 10, 60_000),
          (again) => expect(again).toEqual([]),
        );
        await beforeDeadline(
          expiresAt,
          () => backend.findAvailableTasks("w2", 10),
          (found) => expect(found).toEqual([]),
        );
        // Once it expired: ready again (score timeoutAt), still a timeout.
        const again = await eventually("the lease to expire", async () => {
          const [found] = await backend.findAvailableTasks("w2", 10);
          return found;
        });
        expect(again).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
        expect(Number(await admin.zscore(k.ready, id))).toBe(timeoutAt);
        // An event now wins over the timeout, and the wait is ready at its updatedAt.
        const sequence = await backend.sendEvent(id, "e", text("late"));
        const [withEvent] = await backend.findAvailableTasks("w2", 10);
        expect(withEvent).toMatchObject({ taskId: "t1", event: { eventName: "e", sequence } });
        expect(withEvent?.timedOut).toBeUndefined();
        expect(Number(await admin.zscore(k.ready, id))).toBe(1_700_000_000_000);
        // A wait without a timeout and without events is in no set.
        const never = uid();
        const kn = backend.layout.instance(never);
        await backend.saveSnapshot(awaiting(never, "e", "t1"));
        for (const key of [kn.ready, kn.leased, kn.timers]) expect(await admin.zscore(key, never)).toBeNull();
      } finally {
        admin.disconnect();
      }
    });

    it("a stray timer entry (keys changed behind the scripts' back) is neither found nor claimed, and leaves the timer set; event names keep their bytes", async () => {
      const { backend } = await subject();
      const admin = adminClient(t) as Redis;
      try {
        const [gone, plain] = [uid(), uid()];
        await backend.saveSnapshot(atTask(plain, "t1", { completed: { t1: text("done") } }));
        for (const id of [gone, plain]) await admin.zadd(backend.layout.instance(id).timers, 1, id);
        expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
        expect(await backend.claimAvailableTasks("w", 10, 60_000)).toEqual([]);
        for (const id of [gone, plain]) {
          const k = backend.layout.instance(id);
          for (const key of [k.timers, k.ready, k.leased]) expect(await admin.zscore(key, id)).toBeNull();
        }
        // A name with multi-byte characters through discovery, claim-next and the event list.
        const id = uid();
        const name = "évé-✓-🚀";
        await backend.saveSnapshot(awaiting(id, name, "t1"));
        const sequence = await backend.sendEvent(id, name, text("ok"));
        expect((await backend.findAvailableTasks("w", 10))[0]?.event).toEqual({ eventName: name, sequence });
        expect((await backend.claimAvailableTasks("w", 10, 60_000))[0]?.event).toEqual({
          eventName: name,
          sequence,
        });
        expect((await backend.loadPendingEvents(id)).map((e) => e.eventName)).toEqual([name]);
      } finally {
        admin.disconnect();
      }
    });

    it("discovery and claim-next merge timed-out waits (by timeoutAt) with ready tasks (by updatedAt), over several shards", async () => {
      const { backend } = await subject({ shards: 4 });
      const ids = Array.from({ length: 12 }, (_, i) => `${String(i).padStart(2, "0")}-${uid()}`);
      // Even: AtTask with updatedAt 1000 + 10 i; odd: a wait that timed out at 1000 + 10 i.
      for (const [i, id] of ids.entries()) {
        const at = 1_000 + 10 * i;
        await backend.saveSnapshot(
          i % 2 === 0
            ? atTask(id, "t", { updatedAt: at })
            : awaiting(id, "e", "t", { timeoutAt: at, updatedAt: 5 }),
        );
      }
      expect(new Set(ids.map((id) => backend.layout.shardOf(id))).size).toBeGreaterThan(1);
      const found = await backend.findAvailableTasks("w", 5);
      expect(found.map((f) => f.instanceId)).toEqual(ids.slice(0, 5));
      expect(found.map((f) => f.timedOut === true)).toEqual([false, true, false, true, false]);
      const claimed = await backend.claimAvailableTasks("w", 100, 60_000);
      expect(claimed.map((c) => c.instanceId)).toEqual(ids);
      expect(claimed.filter((c) => c.timedOut).map((c) => c.instanceId)).toEqual(
        ids.filter((_, i) => i % 2 === 1),
      );
    });

    it("cancel applies only to the state it read: a result landing in between makes it read again (CHANGED)", async () => {
      const calls: ScriptName[] = [];
      let meddle: (() => Promise<void>) | undefined;
      const s = await subject(
        around(async (script, run) => {
          calls.push(script);
          if (script === "cancelWorkflow" && meddle !== undefined) {
            const m = meddle;
            meddle = undefined;
            await m();
          }
          return run();
        }),
      );
      const other = await connect(s);
      const id = uid();
      await s.backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      const claim = await other.claimTask(id, "t2", "w", 60_000);
      // Between the read and the write, the running task's result lands.
      meddle = async () => {
        await other.saveTaskResult(id, "t2", text("two"), { claim: claim! });
      };
      await s.backend.cancelWorkflow(id, { reason: "r" });
      expect(calls.filter((c) => c === "loadHeader" || c === "cancelWorkflow")).toEqual([
        "loadHeader",
        "cancelWorkflow",
        "loadHeader",
        "cancelWorkflow",
      ]);
      const loaded = await s.backend.loadSnapshot(id);
      // Read again: t2 has a result, so nothing was interrupted.
      expect(loaded.state).toMatchObject({ kind: "Cancelled", reason: "r", interruptedAtTaskId: null });
      expect(
        Object.keys(loaded.state.kind === "Cancelled" ? loaded.state.completedTasks : {}).sort(),
      ).toEqual(["t1", "t2"]);
      // Revoked: the claim record stays (token kept, expiry the epoch), so a new claim's token is larger.
      await expectCode(other.extendTaskClaim(id, "t2", "w", 60_000), ErrorCode.ClaimLost);
      const next = await s.backend.claimTask(id, "t2", "w2", 60_000);
      expect(next?.token).toBeGreaterThan(claim!.token);
    });

    it("a cancel is final inside the scripts: revoked claims expire at the epoch (ttl or not), saveSnapshot answers FENCE_REJECTED then CANCELLED_IS_FINAL, extend CLAIM_EXPIRED then CLAIM_REVOKED", async () => {
      const replies: Array<[ScriptName, unknown]> = [];
      const s = await subject(
        around(async (script, run) => {
          const reply = await run();
          replies.push([script, reply]);
          return reply;
        }),
      );
      const { backend } = s;
      const admin = adminClient(t) as Redis;
      const code = (script: ScriptName): number => {
        const reply = replies.filter(([name]) => name === script).at(-1)?.[1];
        return Number(Array.isArray(reply) ? reply[0] : reply);
      };
      try {
        const id = uid();
        const k = backend.layout.instance(id);
        await backend.saveSnapshot(atTask(id, "t1"));
        const timed = await backend.claimTask(id, "t1", "w1", 60_000);
        const forever = await backend.claimTask(id, "t0", "w0", null);
        await backend.cancelWorkflow(id, { reason: "stop" });
        // Both revoked to the epoch, holder and token kept.
        for (const [task, claim, worker] of [
          ["t1", timed, "w1"],
          ["t0", forever, "w0"],
        ] as const) {
          const raw = (await admin.hget(k.meta, `${FieldPrefix.claim}${task}`)) ?? "";
          const [token, , expiry] = raw.split("|");
          expect([token, expiry, raw.endsWith(`|${worker}`)]).toEqual([
            String(claim!.token),
            String(REVOKED_EXPIRY),
            true,
          ]);
        }
        // The revoked holder: its claim has expired (checked before the cancel), its fence is stale.
        await expectCode(backend.extendTaskClaim(id, "t1", "w1", 60_000), ErrorCode.ClaimLost);
        expect(code("extendClaim")).toBe(Code.claimExpired);
        const done = finished(id, { kind: "Completed", finalOutput: text("late") });
        await expectCode(backend.saveSnapshot(done, { claim: timed! }), ErrorCode.ClaimLost);
        expect(code("saveSnapshot")).toBe(Code.fenceRejected);
        // A claim taken after the cancel: live, but its heartbeat fails and its fence writes nothing.
        const late = await backend.claimTask(id, "t1", "w2", 60_000);
        await expectCode(backend.extendTaskClaim(id, "t1", "w2", 60_000), ErrorCode.ClaimLost);
        expect(code("extendClaim")).toBe(Code.claimRevoked);
        await expectCode(backend.saveSnapshot(done, { claim: late! }), ErrorCode.Conflict);
        expect(code("saveSnapshot")).toBe(Code.cancelledIsFinal);
        // Reopening is judged before cancelled-final.
        await expectCode(backend.saveSnapshot(atTask(id, "t1")), ErrorCode.Conflict);
        expect(code("saveSnapshot")).toBe(Code.cannotReopen);
        expect(await admin.hget(k.meta, MetaField.status)).toBe("Cancelled");
        // A Cancelled snapshot over it is accepted.
        await backend.saveSnapshot(await backend.loadSnapshot(id));
        expect(code("saveSnapshot")).toBe(Code.ok);
      } finally {
        admin.disconnect();
      }
    });

    it("a second run of the same call (a re-sent command) answers what the first did: control, sendEvent, a consuming save", async () => {
      const twice = new Set<ScriptName>([
        "pauseWorkflow",
        "resumeWorkflow",
        "cancelWorkflow",
        "sendEvent",
        "saveSnapshot",
      ]);
      const s = await subject(
        around(async (script, run) => {
          if (!twice.has(script)) return run();
          await run();
          return run();
        }),
      );
      const { backend } = s;
      const id = uid();
      const wait = awaiting(id, "e", "t1");
      await backend.saveSnapshot(wait);
      await backend.pauseWorkflow(id);
      expect((await backend.loadSnapshot(id)).state.kind).toBe("Paused");
      await backend.resumeWorkflow(id);
      expect((await backend.loadSnapshot(id)).state.kind).toBe("InProgress");
      expect(await backend.sendEvent(id, "e", text("one"))).toBe(1);
      expect(await backend.sendEvent(id, "e", text("two"))).toBe(2);
      expect((await backend.loadPendingEvents(id)).map((e) => decode(e.payload))).toEqual(["one", "two"]);
      const [task] = await backend.claimAvailableTasks("w", 1, 60_000);
      const past = updatePosition(markTaskCompleted(wait, "t1", text("r")), { kind: "AtTask", taskId: "t2" });
      await backend.saveSnapshot(past, { claim: task!.claim, consumeEvent: task!.event! });
      // Consumed once: the second event of that name is still pending.
      expect((await backend.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([2]);
      await backend.cancelWorkflow(id);
      expect((await backend.loadSnapshot(id)).state.kind).toBe("Cancelled");
      // A new call is judged anew.
      await expectCode(backend.cancelWorkflow(id), ErrorCode.Conflict);
    });

    it("records written before this release (no status or position-task field, the initial input only in the header) are paused, resumed and cancelled", async () => {
      const { backend } = await subject();
      const admin = adminClient(t) as Redis;
      try {
        const id = uid();
        const k = backend.layout.instance(id);
        const snapshot = atTask(id, "t2", { completed: { t1: text("one") }, initialInput: text("in") });
        await backend.saveSnapshot(snapshot);
        await admin.hdel(k.meta, MetaField.status, MetaField.positionTask, MetaField.initialInput);
        await admin.hset(k.meta, MetaField.header, Buffer.from(encodeSnapshotHeader(snapshot)));
        await backend.pauseWorkflow(id);
        expect(await admin.hget(k.meta, MetaField.status)).toBe("Paused");
        expect(decode((await admin.hgetBuffer(k.meta, MetaField.initialInput)) ?? undefined)).toBe("in");
        await backend.resumeWorkflow(id);
        expect((await backend.findAvailableTasks("w", 10)).map((f) => [f.taskId, decode(f.input)])).toEqual([
          ["t2", "one"],
        ]);
        await backend.cancelWorkflow(id);
        const loaded = await backend.loadSnapshot(id);
        expect(loaded.state).toMatchObject({ kind: "Cancelled", interruptedAtTaskId: "t2" });
        expect(decode(loaded.initialInput)).toBe("in");
      } finally {
        admin.disconnect();
      }
    });

    it("many instances through control and events never fail (no CROSSSLOT)", async () => {
      const { backend } = await subject();
      const ids = Array.from({ length: 60 }, (_, i) => `${uid("ce")}:{${i % 7}}`);
      await Promise.all(
        ids.map((id, i) =>
          backend.saveSnapshot(awaiting(id, "go", "t1", { timeoutAt: i % 3 === 0 ? 1_000 : null })),
        ),
      );
      await Promise.all(ids.slice(0, 40).map((id) => backend.sendEvent(id, "go", text(id))));
      await Promise.all(ids.slice(40, 50).map((id) => backend.pauseWorkflow(id)));
      await Promise.all(ids.slice(45, 50).map((id) => backend.resumeWorkflow(id)));
      await Promise.all(ids.slice(50, 55).map((id) => backend.cancelWorkflow(id)));
      const ready = ids.filter(
        (_, i) => i < 40 || (i >= 45 && i < 50 && i % 3 === 0) || (i >= 55 && i % 3 === 0),
      );
      const claimed = await backend.claimAvailableTasks("w", 1000, 60_000);
      expect(claimed.map((c) => c.instanceId).sort()).toEqual([...ready].sort());
      for (const c of claimed) {
        if (c.event !== undefined) expect(decode(c.input)).toBe(c.instanceId);
        else expect(c.timedOut).toBe(true);
      }
      await Promise.all(
        claimed.map((c) =>
          backend.saveSnapshot(atTask(c.instanceId, "t2"), {
            claim: c.claim,
            ...(c.event === undefined ? {} : { consumeEvent: c.event }),
          }),
        ),
      );
      const pending = await Promise.all(ids.slice(0, 40).map((id) => backend.loadPendingEvents(id)));
      expect(pending.every((p) => p.length === 0)).toBe(true);
      await Promise.all(ids.map((id) => backend.deleteSnapshot(id)));
    }, 60_000);
  });
}

describe.skipIf(servers.standalone === null)("claim-next cost (standalone, MONITOR)", () => {
  it("on plain tasks it only reads the head of each shard's timer set (one ZRANGEBYSCORE per shard)", async () => {
    const url = (servers.standalone as { url: string }).url;
    const s = await createSubject({}, { url, shards: 4 });
    const admin = new Redis(url);
    let monitor: Redis | undefined;
    try {
      const ids = Array.from({ length: 8 }, (_, i) => `${i}-${uid()}`);
      for (const [i, id] of ids.entries())
        await s.backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_000 + i }));
      await s.backend.findAvailableTasks("w", 1); // loads the layout and a script
      await s.backend.claimAvailableTasks("w", 1, 60_000); // loads the script on the connection
      monitor = await new Redis(url).monitor();
      const seen: string[][] = [];
      monitor.on("monitor", (_time: string, args: string[]) => {
        if (args.some((a) => typeof a === "string" && a.includes(s.keyPrefix))) seen.push(args.map(String));
      });
      await sleep(50);
      expect(await s.backend.claimAvailableTasks("w", 7, 60_000)).toHaveLength(7);
      await sleep(100);
      const onTimers = seen.filter((a) => a.some((x) => x.endsWith("}:timers")));
      expect(onTimers.map((a) => a[0]?.toLowerCase())).toEqual(Array(4).fill("zrangebyscore"));
      // Nothing touches events or waits on plain tasks.
      expect(seen.filter((a) => a.some((x) => /\}:[eo]:/.test(x)))).toEqual([]);
    } finally {
      monitor?.disconnect();
      await s.backend.close();
      await s.cleanup();
      await admin.quit();
    }
  });
});
