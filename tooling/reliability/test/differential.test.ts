// Differential fuzzing (fast-check): random operation sequences on each backend and on the memory
// reference, results and error codes compared step by step, failures shrunk to a minimal sequence.
// Time is fuzzed too (src/fuzz/clock.ts): short leases and soon runAt/retryAt/timeouts, and
// elapses that sleep past them, on real time for the backends and on a virtual clock for the
// deliberately broken memory backends. SAYIIR_FUZZ_RUNS sets the number of sequences per backend
// (default 60; CI keeps each backend under a time budget), SAYIIR_FUZZ_SEED replays a failure.

import { BACKEND_NAMES, type BackendName, BackendUnavailable, type Subject } from "@sayiir/backends";
import type {
  AvailableTask,
  CompletionOutcome,
  ControlRequest,
  DiscoveryOptions,
  PersistentBackend,
  PurgeOptions,
  RenewedClaim,
  TaskClaim,
  TaskCompletion,
  TaskFailure,
  WorkflowSnapshot,
  WriteOptions,
} from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { InMemoryBackend, type InMemoryBackendOptions } from "@sayiir/persistence-memory";
import fc from "fast-check";
import { describe, expect, it, type TestContext } from "vitest";
import {
  cleanupRun,
  describeOps,
  FOUND,
  FuzzClock,
  isInconclusive,
  Lane,
  type Mismatch,
  type Op,
  REAL_TIME,
  runSequence,
  type SequenceResult,
  sequenceArb,
  type TimeStats,
  VirtualTime,
} from "../src/fuzz.ts";
import { BACKENDS } from "../src/registry.ts";
import { injectedUrls } from "../src/servers.ts";

const RUNS = Number(process.env.SAYIIR_FUZZ_RUNS ?? 60);
const LONG = process.env.SAYIIR_FUZZ_RUNS !== undefined;
/** Per-backend time budget of the default run; a long run (SAYIIR_FUZZ_RUNS set) has none. */
const BUDGET_MS = LONG ? undefined : 30_000;
const SEED = process.env.SAYIIR_FUZZ_SEED === undefined ? undefined : Number(process.env.SAYIIR_FUZZ_SEED);

let runCounter = 0;

function laneIds(tag: string) {
  const names = ["i0", "i:1", "i{2}"];
  return (i: 0 | 1 | 2) => `${tag}/${names[i]}`;
}

function format(result: Mismatch | string): string {
  if (typeof result === "string") return result;
  return `step ${result.step} ${JSON.stringify(result.op)}\n  subject: ${JSON.stringify(result.subject)}\n  model:   ${JSON.stringify(result.model)}`;
}

/**
 * A short lease on a backend: long enough for several steps to run clearly before it ends (a
 * step's guard is twice the slowest recent step, at most half a lease), short because every elapse
 * sleeps up to it, plus the declared skew. A declared skew adds to it, so that the slowest backend
 * (DynamoDB Local, ~20 ms an operation, a 200 ms budget) keeps a few steps clearly before too.
 */
function shortMsOf(backend: PersistentBackend): number {
  return 200 + backend.capabilities.clockSkewMs;
}

/**
 * The property: one sequence, run on the subject's clients and on a fresh memory reference, both
 * on `clock`'s time source (`model`: the reference's options, its clock for a virtual one).
 */
function property(
  clients: PersistentBackend[],
  name: string,
  stats: { runs: number; ops: number },
  clock: FuzzClock,
  model: InMemoryBackendOptions = {},
) {
  return fc.asyncProperty(sequenceArb, async (ops: Op[]) => {
    const tag = `r${++runCounter}-${Date.now().toString(36)}`;
    const subject = new Lane(name, clients, laneIds(tag));
    const reference = new InMemoryBackend(model);
    let result: Awaited<ReturnType<typeof runSequence>> | undefined;
    try {
      result = await runSequence(subject, new Lane("memory", [reference], laneIds(tag)), ops, clock);
      stats.runs++;
      stats.ops += ops.length;
    } finally {
      await reference.close();
    }
    const clean = await cleanupRun(subject);
    if (isInconclusive(result)) {
      console.warn(
        `[reliability] differential ${name}: inconclusive (a step overran its guard)\n${format(result.inconclusive)}`,
      );
    } else if (result !== null) throw new Error(format(result));
    if (!clean) throw new Error(`${name}: the run's snapshots are still listed or ready after deleting them`);
  });
}

function describeTime(t: TimeStats): string {
  return (
    `${t.elapses} elapses (${t.automatic} automatic, ${t.sleptMs} ms asleep), ${t.afterElapse} steps after one` +
    ` (${t.claimLost} CLAIM_LOST, ${t.served} serving a task), ${t.ambiguous} ambiguous steps, ${t.inconclusive} inconclusive`
  );
}

async function fuzz(clients: PersistentBackend[], name: string) {
  const stats = { runs: 0, ops: 0 };
  const skewMs = clients[0]!.capabilities.clockSkewMs;
  const clock = new FuzzClock(REAL_TIME, { shortMs: shortMsOf(clients[0]!), skewMs });
  const started = Date.now();
  const details = await fc.check(property(clients, name, stats, clock), {
    numRuns: RUNS,
    ...(SEED === undefined ? {} : { seed: SEED }),
    ...(BUDGET_MS === undefined ? {} : { interruptAfterTimeLimit: BUDGET_MS, markInterruptAsFailure: false }),
  });
  console.info(
    `[reliability] differential ${name}: ${stats.runs} sequences, ${stats.ops} operations in ${Date.now() - started} ms` +
      ` (seed ${details.seed}${details.interrupted ? ", stopped at the time budget" : ""}); short lease ${clock.timing.shortMs} ms,` +
      ` ${describeTime(clock.stats)}`,
  );
  return details;
}

/** Opens the backend (or skips the test with a printed reason): its subject and three clients. */
async function open(name: BackendName, ctx: TestContext): Promise<[Subject, PersistentBackend[]]> {
  let subject: Subject;
  try {
    subject = await BACKENDS[name].create(injectedUrls());
  } catch (error) {
    if (error instanceof BackendUnavailable) {
      console.warn(`[reliability] differential: SKIPPED backend ${name}: ${error.message}`);
      ctx.skip(error.message);
    }
    throw error;
  }
  return [subject, [subject.backend, await subject.connect(), await subject.connect()]];
}

describe("differential fuzzing against the memory reference", () => {
  for (const name of BACKEND_NAMES) {
    it(`${name}: every result and error code matches the reference`, {
      timeout: LONG ? 3_600_000 : 120_000,
    }, async (ctx) => {
      const [subject, clients] = await open(name, ctx);
      try {
        const details = await fuzz(clients, name);
        if (details.failed) {
          const ops = details.counterexample?.[0] as Op[] | undefined;
          throw new Error(
            `${name} diverges from the reference (seed ${details.seed}, path ${details.counterexamplePath}).\n` +
              `Minimal sequence:\n${ops ? describeOps(ops) : "?"}\n${(details.errorInstance as Error | undefined)?.message ?? ""}`,
          );
        }
      } finally {
        await Promise.allSettled(clients.map((c) => c.close()));
        await subject.cleanup();
      }
    });
  }

  for (const found of FOUND) {
    for (const name of BACKEND_NAMES) {
      const known = found.knownBug.includes(name);
      (known ? it.fails : it)(`found: ${found.what}: ${name}${known ? " (known bug)" : ""}`, async (ctx) => {
        const [subject, clients] = await open(name, ctx);
        const skewMs = clients[0]!.capabilities.clockSkewMs;
        const clock = new FuzzClock(REAL_TIME, { shortMs: shortMsOf(clients[0]!), skewMs });
        try {
          // A stall past a guard leaves no verdict (clock.ts): replay, on fresh ids, up to 3 times.
          let result: SequenceResult = null;
          for (let round = 0; round < 3; round++) {
            const ids = laneIds(`found-${++runCounter}-${Date.now().toString(36)}`);
            const reference = new Lane("memory", [new InMemoryBackend()], ids);
            result = await runSequence(new Lane(name, clients, ids), reference, found.ops, clock);
            if (!isInconclusive(result)) break;
          }
          if (result !== null) throw new Error(format(isInconclusive(result) ? result.inconclusive : result));
        } finally {
          await Promise.allSettled(clients.map((c) => c.close()));
          await subject.cleanup();
        }
      });
    }
  }

  it("can fail: a backend whose release ignores the holder is caught and shrunk", async () => {
    class Sloppy extends InMemoryBackend {
      override async releaseTaskClaim(instanceId: string, taskId: string, _workerId: string): Promise<void> {
        const holder = this.store.claims.get(instanceId)?.get(taskId)?.workerId;
        return super.releaseTaskClaim(instanceId, taskId, holder ?? _workerId);
      }
    }
    const ops = await catches((o) => new Sloppy(o), 500);
    console.info(`[reliability] sloppy release, minimal sequence:\n${describeOps(ops)}`);
    // Shrunk to the few steps that show it: a claim (or a wait, an event and a claim-next), then
    // another worker's release.
    expect(ops.length).toBeLessThanOrEqual(4);
    expect(ops.map((o) => o.op)).toContain("release");
  });

  // The control, event and scheduling operations are fuzzed too: a backend that gets one of them
  // wrong is caught.
  const sloppyControl: Array<[string, Make, Array<Op["op"]>]> = [
    [
      "a write past a wait that leaves its event pending",
      (o) =>
        new (class extends InMemoryBackend {
          override async saveSnapshot(snapshot: WorkflowSnapshot, options?: WriteOptions): Promise<void> {
            const { consumeEvent, ...rest } = options ?? {};
            if (consumeEvent === undefined || rest.claim === undefined)
              return super.saveSnapshot(snapshot, options);
            const pending = await this.loadPendingEvents(snapshot.instanceId).catch(() => []);
            const oldest = pending.find((e) => e.eventName === consumeEvent.eventName);
            // Refused as the reference refuses; when it lands, the event stays.
            if (oldest?.sequence !== consumeEvent.sequence) return super.saveSnapshot(snapshot, options);
            return super.saveSnapshot(snapshot, rest);
          }
        })(o),
      ["save", "work"],
    ],
    [
      "a heartbeat that never says paused",
      (o) =>
        new (class extends InMemoryBackend {
          override async extendTaskClaim(i: string, t: string, w: string, d: number): Promise<RenewedClaim> {
            return { ...(await super.extendTaskClaim(i, t, w, d)), workflowPaused: false };
          }
        })(o),
      ["extend", "heartbeat"],
    ],
    [
      "discovery that ignores timed-out waits",
      (o) =>
        new (class extends InMemoryBackend {
          override async findAvailableTasks(
            w: string,
            limit: number,
            options?: DiscoveryOptions,
          ): Promise<AvailableTask[]> {
            return (await super.findAvailableTasks(w, limit, options)).filter((t) => t.timedOut !== true);
          }
        })(o),
      ["find", "wait"],
    ],
    [
      "a cancel that keeps the claims alive",
      (o) =>
        new (class extends InMemoryBackend {
          override async cancelWorkflow(instanceId: string, request?: ControlRequest): Promise<void> {
            const held = [...(this.store.claims.get(instanceId)?.values() ?? [])].map((c) => ({ ...c }));
            await super.cancelWorkflow(instanceId, request);
            for (const claim of held) this.store.claims.get(instanceId)?.set(claim.taskId, claim);
          }
        })(o),
      ["cancel"],
    ],
    // Scheduling (issue 16): retries, priorities and queues are fuzzed too.
    [
      "a retry handed out before its retryAt",
      (o) =>
        new (class extends InMemoryBackend {
          override async failTasks(failures: readonly TaskFailure[]): Promise<CompletionOutcome[]> {
            return super.failTasks(
              failures.map((f) => ({ ...f, retryAt: f.retryAt === null ? null : 1_000 })),
            );
          }
        })(o),
      ["fail", "work"],
    ],
    [
      "discovery that serves every queue",
      (o) =>
        new (class extends InMemoryBackend {
          override async findAvailableTasks(w: string, limit: number): Promise<AvailableTask[]> {
            return super.findAvailableTasks(w, limit, { queues: ["default", "bulk:2"] });
          }
        })(o),
      ["find", "wait"],
    ],
    [
      "discovery that ignores priorities",
      (o) =>
        new (class extends InMemoryBackend {
          override async findAvailableTasks(
            w: string,
            limit: number,
            options?: DiscoveryOptions,
          ): Promise<AvailableTask[]> {
            const all = await super.findAvailableTasks(w, 1000, options);
            return all.sort((x, y) => (x.instanceId < y.instanceId ? -1 : 1)).slice(0, limit);
          }
        })(o),
      ["find", "wait"],
    ],
    // One write per step (issue 17): completeTasks with next is fuzzed too.
    [
      "a step that drops its next task's runAt",
      (o) =>
        new (class extends InMemoryBackend {
          override async completeTasks(completions: readonly TaskCompletion[]): Promise<CompletionOutcome[]> {
            return super.completeTasks(
              completions.map((c) =>
                c.next?.kind === "AtTask" ? { ...c, next: { kind: "AtTask", taskId: c.next.taskId } } : c,
              ),
            );
          }
        })(o),
      ["complete", "work"],
    ],
    // Operating a store (issue 19): result reads, claim listings and purges are fuzzed too.
    [
      "a purge that skips cancelled workflows",
      (o) =>
        new (class extends InMemoryBackend {
          override async purgeFinished(options: PurgeOptions): Promise<number> {
            const cancelled = [...this.store.instances].filter(([, s]) => s.status === "Cancelled");
            for (const [id] of cancelled) this.store.finished.remove(id);
            return super.purgeFinished(options);
          }
        })(o),
      ["purge"],
    ],
    [
      "a result read that ignores a workflow's completion",
      (o) =>
        new (class extends InMemoryBackend {
          override async loadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
            const stored = this.store.instances.get(instanceId);
            if (stored?.status === "Completed") return new Uint8Array([1]);
            return super.loadTaskResult(instanceId, taskId);
          }
        })(o),
      ["taskResult"],
    ],
    [
      "a claim listing that shows revoked claims",
      (o) =>
        new (class extends InMemoryBackend {
          override async loadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
            return [...(this.store.claims.get(instanceId)?.values() ?? [])].map((c) => ({ ...c }));
          }
        })(o),
      ["claims"],
    ],
  ];
  for (const [what, make, culprits] of sloppyControl) {
    it(`can fail: ${what} is caught and shrunk`, async () => {
      const ops = await catches(make, 3000);
      console.info(`[reliability] ${what}, minimal sequence:\n${describeOps(ops)}`);
      expect(ops.some((o) => culprits.includes(o.op))).toBe(true);
      expect(ops.length).toBeLessThanOrEqual(8);
    });
  }

  // Expiry (issue 20): short leases, soon run-at times and elapses are fuzzed too. Each of these is
  // wrong only once time has passed, so the minimal sequence must show time passing: an elapse,
  // or a soon time served before any elapse.
  const sloppyTime: Array<[string, Make, Array<Op["op"]>, "elapse" | "soon"]> = [
    [
      "a lapsed claim that nobody can take over",
      (o) =>
        new (class extends InMemoryBackend {
          override async claimTask(
            i: string,
            t: string,
            w: string,
            ttl: number | null,
          ): Promise<TaskClaim | null> {
            // A lease that ran out still blocks (a revoked or released claim does not).
            const held = this.store.claim(i, t);
            if (held?.expiresAt != null && held.expiresAt !== REVOKED_EXPIRY) return null;
            return super.claimTask(i, t, w, ttl);
          }
        })(o),
      ["claim", "race"],
      "elapse",
    ],
    [
      "an extend that revives a lapsed claim",
      (o) =>
        new (class extends InMemoryBackend {
          override async extendTaskClaim(i: string, t: string, w: string, d: number): Promise<RenewedClaim> {
            const held = this.store.claim(i, t);
            const now = this.store.clock();
            const lapsed =
              held?.expiresAt != null && held.expiresAt !== REVOKED_EXPIRY && held.expiresAt <= now;
            if (held === undefined || held.workerId !== w || !lapsed)
              return super.extendTaskClaim(i, t, w, d);
            held.expiresAt = now + d;
            return { ...held, workflowPaused: this.store.instances.get(i)?.status === "Paused" };
          }
        })(o),
      ["extend", "heartbeat"],
      "elapse",
    ],
    [
      "discovery that serves a task a second before its runAt",
      (o) => {
        // Discovery judges due times on a clock one second ahead; claims stay judged on the true
        // clock (a claim lapsing within the second is not served), and so do stamps.
        let ahead = 0;
        const clock = o.clock ?? Date.now;
        return new (class extends InMemoryBackend {
          override async findAvailableTasks(
            w: string,
            limit: number,
            options?: DiscoveryOptions,
          ): Promise<AvailableTask[]> {
            ahead = 1000;
            let early: AvailableTask[];
            try {
              early = await super.findAvailableTasks(w, 1000, options);
            } finally {
              ahead = 0;
            }
            const live = (t: AvailableTask) => {
              const claim = this.store.claim(t.instanceId, t.taskId);
              return claim !== undefined && (claim.expiresAt === null || claim.expiresAt > clock());
            };
            return early.filter((t) => !live(t)).slice(0, limit);
          }
        })({ ...o, clock: () => clock() + ahead });
      },
      ["find", "wait"],
      "soon",
    ],
  ];
  for (const [what, make, culprits, marker] of sloppyTime) {
    it(`can fail: ${what} is caught and shrunk`, async () => {
      const ops = await catches(make, 3000);
      console.info(`[reliability] ${what}, minimal sequence:\n${describeOps(ops)}`);
      expect(ops.some((o) => culprits.includes(o.op))).toBe(true);
      if (marker === "elapse") expect(ops.map((o) => o.op)).toContain("elapse");
      else expect(describeOps(ops)).toContain('"soon"');
      expect(ops.length).toBeLessThanOrEqual(8);
    });
  }
});

/** A deliberately broken memory backend over the given options (its clock). */
type Make = (options: InMemoryBackendOptions) => InMemoryBackend;

/** The short lease of the broken backends' runs, in virtual ms. */
const VIRTUAL_SHORT_MS = 300;

/**
 * Fuzzes a deliberately broken in-memory backend (seed 42): it must fail. It and the reference
 * share one virtual clock, so elapses cost nothing and no step is ambiguous. Returns the shrunk
 * sequence, cut after the step that diverges (replayed on a fresh one; shrinking keeps at least
 * one operation after the setup even when the divergence comes earlier).
 */
async function catches(make: Make, numRuns: number): Promise<Op[]> {
  const run = async (ops?: Op[]) => {
    const time = new VirtualTime();
    const clock = new FuzzClock(time, { shortMs: VIRTUAL_SHORT_MS, skewMs: 0 });
    const sloppy = make({ clock: time.now });
    const clients = [sloppy, sloppy.connect(), sloppy.connect()];
    if (ops === undefined) {
      const stats = { runs: 0, ops: 0 };
      return fc.check(property(clients, "sloppy", stats, clock, { clock: time.now }), { numRuns, seed: 42 });
    }
    const ids = laneIds(`replay-${++runCounter}`);
    const reference = new Lane("memory", [new InMemoryBackend({ clock: time.now })], ids);
    return runSequence(new Lane("sloppy", clients, ids), reference, ops, clock);
  };
  const details = (await run()) as fc.RunDetails<[Op[]]>;
  expect(details.failed).toBe(true);
  const ops = details.counterexample?.[0] as Op[];
  const result = await run(ops);
  return result !== null && typeof result === "object" && "step" in result
    ? ops.slice(0, result.step + 1)
    : ops;
}
