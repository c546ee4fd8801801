// Crash soak, short form, on every backend with a server or a file (memory is in-process): 8
// worker processes of the reference loop, a random one SIGKILLed (or frozen past its lease) every
// 1.5-3.5 s, while the controller cancels, pauses, resumes and sends events. SAYIIR_SOAK_BACKENDS
// picks the backends, SAYIIR_SOAK_SECONDS the duration of each (default: SHORT_SECONDS below); the
// long form is `node src/soak.ts --backend <name> --seconds N`.

import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BackendUnavailable, parseTargetName, type ServerUrls, type TargetName } from "@sayiir/backends";
import { bytes, evaluate, text } from "@sayiir/worker";
import { describe, expect, inject, it } from "vitest";
import { checkSoakHistory, describeViolation } from "../src/linearizability.ts";
import type { RecordedEvent } from "../src/recorder.ts";
import { BACKENDS } from "../src/registry.ts";
import { injectedUrls } from "../src/servers.ts";
import type { Plan } from "../src/soak/controller.ts";
import { failReleases, type LoopEvent } from "../src/soak/logs.ts";
import { expectedOutput, soakWorkflows, type WorkflowKind } from "../src/soak/workload.ts";
import { analyze, checkOperations, runSoak } from "../src/soak.ts";

/**
 * Seconds of chaos per backend in CI: SQLite and Postgres as before, shorter on the others (the
 * stand-ins are slower, and each run also drains); about 60 s more than the two of 20 s before.
 */
const SHORT_SECONDS: Record<string, number> = {
  sqlite: 12,
  postgres: 12,
  redis: 9,
  "redis-cluster": 9,
  mongo: 9,
  dynamodb: 9,
};
const SOAK_BACKENDS = (
  process.env.SAYIIR_SOAK_BACKENDS ?? "sqlite,postgres,redis,redis-cluster,mongo,dynamodb"
)
  .split(",")
  .map(parseTargetName);
const secondsOf = (name: TargetName) => Number(process.env.SAYIIR_SOAK_SECONDS ?? SHORT_SECONDS[name] ?? 10);

/** The servers of the global setup, and the Redis Cluster's seed nodes where one was started. */
function urls(): ServerUrls {
  const cluster = inject("redisCluster")
    ?.nodes.map((n) => `${n.host}:${n.port}`)
    .join(",");
  return {
    ...injectedUrls(),
    "redis-cluster": cluster ?? process.env.SAYIIR_TEST_REDIS_CLUSTER_NODES ?? null,
  };
}

describe("crash soak", () => {
  for (const name of SOAK_BACKENDS) {
    const seconds = secondsOf(name);
    it(`${name}: 8 workers, random SIGKILL/SIGSTOP for ${seconds} s, cancels, pauses, events, retries, delays, queues: no violation`, {
      timeout: (seconds + 150) * 1000,
    }, async (ctx) => {
      try {
        const probe = await BACKENDS[name].create(urls());
        await probe.backend.close();
        await probe.cleanup();
      } catch (error) {
        if (error instanceof BackendUnavailable) {
          console.warn(`[reliability] crash soak: SKIPPED backend ${name}: ${error.message}`);
          ctx.skip(error.message);
        }
        throw error;
      }
      const history = join(tmpdir(), `sayiir-soak-history-${name}-${Date.now()}.jsonl`);
      const report = await runSoak({ backend: name, urls: urls(), seconds, historyFile: history });
      expect(report.violations).toEqual([]);
      expect(report.completed + report.cancelled + report.uncertain).toBe(report.workflows);
      expect(report.kills).toBeGreaterThan(0);
      expect(report.claims).toBeGreaterThan(report.workflows);
      // The newer operations happened (a soak where none ran would prove nothing about them).
      expect(report.cancels).toBeGreaterThan(0);
      expect(report.workflowPauses).toBeGreaterThan(0);
      expect(report.eventsConsumed).toBeGreaterThan(0);
      expect(report.timeouts).toBeGreaterThan(0);
      expect(report.retries).toBeGreaterThan(0);
      expect(report.delayedClaims).toBeGreaterThan(0);
      expect(report.secondQueueClaims).toBeGreaterThan(0);
      // The same history, checked independently: porcupine against a model of one lease (src/linearizability.ts).
      const lin = await checkSoakHistory(history, `crash soak ${name}`);
      expect(lin?.violations.map(describeViolation) ?? [], `history kept in ${history}`).toEqual([]);
      expect(lin?.verdict ?? "ok", `history kept in ${history}`).toBe("ok");
      await rm(history, { force: true });
    });
  }
});

describe("soak analysis can fail", () => {
  const claim = (w: string, tok: number, ca: number, ea: number, q = ca, r = ca): RecordedEvent => ({
    k: "claim",
    w,
    i: "wf",
    t: "t",
    tok,
    ca,
    ea,
    q,
    r,
  });
  it("finds overlapping live claims, a token granted twice, a renewed stolen lease and a fenced-out write", () => {
    expect(analyze([claim("a", 1, 0, 1000), claim("b", 2, 1100, 2100)]).violations).toEqual([]);
    expect(analyze([claim("a", 1, 0, 1000), claim("b", 2, 500, 1500)]).violations[0]).toMatch(/^overlap/);
    expect(analyze([claim("a", 5, 0, 1000), claim("b", 5, 2000, 3000)]).violations[0]).toMatch(
      /granted twice/,
    );
    const renewed = analyze([
      claim("a", 1, 0, 1000),
      claim("b", 2, 1100, 2100),
      { k: "extend", w: "a", i: "wf", t: "t", tok: 1, ea: 2200, d: 1000, q: 1200, r: 1200 },
    ]);
    expect(renewed.violations.some((v) => v.includes("extended token 1"))).toBe(true);
    const stale = analyze([
      claim("a", 1, 0, 1000),
      claim("b", 2, 1100, 2100),
      { k: "write", op: "snapshot", w: "a", i: "wf", t: "t", tok: 1, ok: true, code: null, q: 1300, r: 1310 },
    ]);
    expect(stale.violations.some((v) => v.startsWith("fenced-out write landed"))).toBe(true);
    // A release before the takeover is not an overlap.
    expect(
      analyze([
        claim("a", 1, 0, 1000),
        { k: "release-req", w: "a", i: "wf", t: "t", q: 100 },
        claim("b", 2, 200, 1200, 200, 210),
      ]).violations,
    ).toEqual([]);
  });
});

describe("soak checks of the newer operations can fail", () => {
  const kinds = new Map<string, WorkflowKind>([
    ["wf", "control"],
    ["ap", "approval"],
    ["ex", "expiring"],
    ["nap", "nap"],
    ["re", "retry"],
    ["ro", "routed"],
    ["ur", "urgent"],
  ]);
  const claim = (i: string, t: string, w: string, tok: number, at: number): RecordedEvent => ({
    k: "claim",
    w,
    i,
    t,
    tok,
    ca: at,
    ea: at + 1000,
    q: at,
    r: at + 1,
  });
  const write = (i: string, w: string, tok: number, at: number, ok = true): RecordedEvent => ({
    k: "write",
    op: "result",
    w,
    i,
    t: "check",
    tok,
    ok,
    code: ok ? null : "CONFLICT",
    q: at,
    r: at + 2,
  });
  const committed = (i: string, taskId: string, extra: Partial<LoopEvent> = {}): LoopEvent =>
    ({
      type: "committed",
      workerId: "w0-g0-default",
      instanceId: i,
      taskId,
      token: 1,
      action: "step",
      finished: false,
      workflowCompleted: false,
      ms: 1,
      now: 0,
      ...extra,
    }) as LoopEvent;
  const check = (events: RecordedEvent[], loop: LoopEvent[], plans: Map<string, Plan> = new Map()) =>
    checkOperations(events, loop, plans, kinds).violations;
  const W = "w0-g0-default";

  it("a cancelled workflow that is claimed, renewed or written after its cancel returned", () => {
    const plans = new Map<string, Plan>([
      ["wf", { kind: "cancel", actAt: 0, done: { q: 90, r: 100, outcome: "landed" } }],
    ]);
    expect(check([claim("wf", "check", W, 1, 50), write("wf", W, 1, 95)], [], plans)).toEqual([]);
    expect(check([claim("wf", "check", W, 2, 150)], [], plans)[0]).toMatch(/after its cancel returned/);
    expect(check([write("wf", W, 1, 120)], [], plans)[0]).toMatch(/landed at 120, after its cancel/);
    expect(check([write("wf", W, 1, 120, false)], [], plans)).toEqual([]);
    const renewed: RecordedEvent = {
      k: "extend",
      w: W,
      i: "wf",
      t: "check",
      tok: 1,
      ea: 2000,
      d: 1000,
      q: 130,
      r: 131,
    };
    expect(check([renewed], [], plans)[0]).toMatch(/lease renewed/);
  });

  it("a paused workflow that moves, is claimed or written between its pause and its resume", () => {
    const paused = (after: string, beforeResume: string): Map<string, Plan> =>
      new Map([
        [
          "wf",
          {
            kind: "pause",
            actAt: 0,
            done: { q: 90, r: 100, outcome: "landed", after, beforeResume, resumeQ: 500, resumeR: 510 },
          },
        ],
      ]);
    const still = paused("Paused:check", "Paused:check");
    // Before the pause, after the resume, and a refused write in between: fine.
    expect(
      check([write("wf", W, 1, 80), write("wf", W, 2, 600), write("wf", W, 1, 200, false)], [], still),
    ).toEqual([]);
    expect(check([], [], paused("Paused:check", "Paused:pack"))[0]).toMatch(/moved while paused/);
    expect(check([claim("wf", "check", W, 3, 200)], [], still)[0]).toMatch(/while paused/);
    expect(check([write("wf", W, 1, 200)], [], still)[0]).toMatch(/landed at 200 while paused/);
  });

  it("an event consumed twice, out of order, or by a wait that had to time out", () => {
    const plans = new Map<string, Plan>([
      [
        "ap",
        {
          kind: "events",
          timing: ["early", "early"],
          sent: [
            { sequence: 1, phase: "before", q: 0, r: 1 },
            { sequence: 2, phase: "before", q: 2, r: 3 },
          ],
        },
      ],
    ]);
    const first = committed("ap", "approve", { event: { eventName: "approval", sequence: 1 } });
    const second = committed("ap", "countersign", { event: { eventName: "approval", sequence: 2 } });
    expect(check([], [first, second], plans)).toEqual([]);
    const swapped = [
      committed("ap", "approve", { event: { eventName: "approval", sequence: 2 } }),
      committed("ap", "countersign", { event: { eventName: "approval", sequence: 1 } }),
    ];
    expect(check([], swapped, plans).some((v) => v.includes("expected the event sent first"))).toBe(true);
    expect(check([], [first, first, second], plans).some((v) => v.includes("consumed by two commits"))).toBe(
      true,
    );
    expect(check([], [committed("ex", "approve", { timedOut: true })])).toEqual([]);
    expect(
      check([], [committed("ex", "approve", { event: { eventName: "approval", sequence: 1 } })])[0],
    ).toMatch(/sent no event/);
  });

  it("a delayed step or a retry claimed before its time", () => {
    const nap = committed("nap", "before", { runAt: 1000 });
    expect(check([claim("nap", "after", W, 1, 1000)], [nap])).toEqual([]);
    expect(check([claim("nap", "after", W, 1, 700)], [nap])[0]).toMatch(/300 ms before its runAt/);
    const retry = {
      type: "retrying",
      workerId: W,
      instanceId: "re",
      taskId: "charge",
      token: 4,
      attempt: 1,
      retryAt: 2000,
      error: "declined",
      now: 1500,
    } as LoopEvent;
    expect(check([claim("re", "charge", W, 4, 1000), claim("re", "charge", W, 5, 2000)], [retry])).toEqual(
      [],
    );
    expect(check([claim("re", "charge", W, 5, 1600)], [retry])[0]).toMatch(/before its retryAt/);
  });

  it("a task claimed from a queue its worker does not serve, or with the wrong priority", () => {
    expect(check([claim("ro", "render", "w7-g0-gpu", 1, 0), claim("ro", "prepare", W, 1, 0)], [])).toEqual(
      [],
    );
    expect(check([claim("ro", "render", W, 1, 0)], [])[0]).toMatch(/does not serve it/);
    expect(check([claim("ro", "prepare", "w7-g0-gpu", 1, 0)], [])[0]).toMatch(/does not serve it/);
    const claimed = (priority: number) =>
      ({
        type: "claimed",
        workerId: W,
        instanceId: "ur",
        taskId: "fix",
        token: 1,
        at: 0,
        attempt: 1,
        priority,
        queue: "default",
        now: 0,
      }) as LoopEvent;
    expect(check([], [claimed(1)])).toEqual([]);
    expect(check([], [claimed(3)])[0]).toMatch(/priority 3/);
  });

  it("a claim whose failTasks was sent before the next claim is not an overlap; without it, it is", () => {
    const history = [claim("re", "charge", W, 1, 0), claim("re", "charge", "w1-g1-default", 2, 300)];
    expect(analyze(history).violations[0]).toMatch(/^overlap/);
    const failReq = {
      type: "fail-req",
      workerId: W,
      instanceId: "re",
      taskId: "charge",
      token: 1,
      now: 100,
    } as LoopEvent;
    expect(analyze([...history, ...failReleases([failReq])]).violations).toEqual([]);
    // Sent after the next claim returned: it cannot have released the claim first.
    expect(analyze([...history, ...failReleases([{ ...failReq, now: 400 }])]).violations[0]).toMatch(
      /^overlap/,
    );
  });

  it("predicts the output of every workflow the soak runs", async () => {
    const workflows = soakWorkflows([0, 0], [0, 0]);
    for (const kind of Object.keys(workflows) as WorkflowKind[]) {
      if (kind === "approval") continue; // two waits on one name: evaluate() cannot say which gets which
      const input = bytes(`in-${kind}`);
      expect(expectedOutput(kind, "id", input), kind).toBe(text(await evaluate(workflows[kind], input)));
    }
  });
});
