// Differential fuzzing (fast-check): random operation sequences on each backend and on the memory
// reference, results and error codes compared step by step, failures shrunk to a minimal sequence.
// SAYIIR_FUZZ_RUNS sets the number of sequences per backend (default 60; CI keeps each backend
// under a time budget), SAYIIR_FUZZ_SEED replays a failure.

import { BACKEND_NAMES, BackendUnavailable, type Subject } from "@sayiir/backends";
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
import { InMemoryBackend } from "@sayiir/persistence-memory";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  cleanupRun,
  describeOps,
  Lane,
  type Mismatch,
  type Op,
  runSequence,
  sequenceArb,
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

/** The property: one sequence, run on the subject's clients and on a fresh memory reference. */
function property(clients: PersistentBackend[], name: string, stats: { runs: number; ops: number }) {
  return fc.asyncProperty(sequenceArb, async (ops: Op[]) => {
    const tag = `r${++runCounter}-${Date.now().toString(36)}`;
    const subject = new Lane(name, clients, laneIds(tag));
    const reference = new InMemoryBackend();
    const model = new Lane("memory", [reference], laneIds(tag));
    let result: Awaited<ReturnType<typeof runSequence>> | undefined;
    try {
      result = await runSequence(subject, model, ops);
      stats.runs++;
      stats.ops += ops.length;
    } finally {
      await reference.close();
    }
    const clean = await cleanupRun(subject);
    if (result !== null) throw new Error(format(result));
    if (!clean) throw new Error(`${name}: the run's snapshots are still listed or ready after deleting them`);
  });
}

async function fuzz(clients: PersistentBackend[], name: string) {
  const stats = { runs: 0, ops: 0 };
  const started = Date.now();
  const details = await fc.check(property(clients, name, stats), {
    numRuns: RUNS,
    ...(SEED === undefined ? {} : { seed: SEED }),
    ...(BUDGET_MS === undefined ? {} : { interruptAfterTimeLimit: BUDGET_MS, markInterruptAsFailure: false }),
  });
  console.info(
    `[reliability] differential ${name}: ${stats.runs} sequences, ${stats.ops} operations in ${Date.now() - started} ms` +
      ` (seed ${details.seed}${details.interrupted ? ", stopped at the time budget" : ""})`,
  );
  return details;
}

describe("differential fuzzing against the memory reference", () => {
  for (const name of BACKEND_NAMES) {
    it(`${name}: every result and error code matches the reference`, {
      timeout: LONG ? 3_600_000 : 120_000,
    }, async (ctx) => {
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
      const clients = [subject.backend, await subject.connect(), await subject.connect()];
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

  it("can fail: a backend whose release ignores the holder is caught and shrunk", async () => {
    class Sloppy extends InMemoryBackend {
      override async releaseTaskClaim(instanceId: string, taskId: string, _workerId: string): Promise<void> {
        const holder = this.store.claims.get(instanceId)?.get(taskId)?.workerId;
        return super.releaseTaskClaim(instanceId, taskId, holder ?? _workerId);
      }
    }
    const ops = await catches(() => new Sloppy(), 500);
    console.info(`[reliability] sloppy release, minimal sequence:\n${describeOps(ops)}`);
    // Shrunk to the few steps that show it: a claim, then another worker's release.
    expect(ops.length).toBeLessThanOrEqual(3);
    expect(ops.map((o) => o.op)).toContain("release");
  });

  // The control, event and scheduling operations are fuzzed too: a backend that gets one of them
  // wrong is caught.
  const sloppyControl: Array<[string, () => InMemoryBackend, Array<Op["op"]>]> = [
    [
      "a write past a wait that leaves its event pending",
      () =>
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
        })(),
      ["save", "work"],
    ],
    [
      "a heartbeat that never says paused",
      () =>
        new (class extends InMemoryBackend {
          override async extendTaskClaim(i: string, t: string, w: string, d: number): Promise<RenewedClaim> {
            return { ...(await super.extendTaskClaim(i, t, w, d)), workflowPaused: false };
          }
        })(),
      ["extend", "heartbeat"],
    ],
    [
      "discovery that ignores timed-out waits",
      () =>
        new (class extends InMemoryBackend {
          override async findAvailableTasks(
            w: string,
            limit: number,
            options?: DiscoveryOptions,
          ): Promise<AvailableTask[]> {
            return (await super.findAvailableTasks(w, limit, options)).filter((t) => t.timedOut !== true);
          }
        })(),
      ["find", "wait"],
    ],
    [
      "a cancel that keeps the claims alive",
      () =>
        new (class extends InMemoryBackend {
          override async cancelWorkflow(instanceId: string, request?: ControlRequest): Promise<void> {
            const held = [...(this.store.claims.get(instanceId)?.values() ?? [])].map((c) => ({ ...c }));
            await super.cancelWorkflow(instanceId, request);
            for (const claim of held) this.store.claims.get(instanceId)?.set(claim.taskId, claim);
          }
        })(),
      ["cancel"],
    ],
    // Scheduling (issue 16): retries, priorities and queues are fuzzed too.
    [
      "a retry handed out before its retryAt",
      () =>
        new (class extends InMemoryBackend {
          override async failTasks(failures: readonly TaskFailure[]): Promise<CompletionOutcome[]> {
            return super.failTasks(
              failures.map((f) => ({ ...f, retryAt: f.retryAt === null ? null : 1_000 })),
            );
          }
        })(),
      ["fail", "work"],
    ],
    [
      "discovery that serves every queue",
      () =>
        new (class extends InMemoryBackend {
          override async findAvailableTasks(w: string, limit: number): Promise<AvailableTask[]> {
            return super.findAvailableTasks(w, limit, { queues: ["default", "bulk:2"] });
          }
        })(),
      ["find", "wait"],
    ],
    [
      "discovery that ignores priorities",
      () =>
        new (class extends InMemoryBackend {
          override async findAvailableTasks(
            w: string,
            limit: number,
            options?: DiscoveryOptions,
          ): Promise<AvailableTask[]> {
            const all = await super.findAvailableTasks(w, 1000, options);
            return all.sort((x, y) => (x.instanceId < y.instanceId ? -1 : 1)).slice(0, limit);
          }
        })(),
      ["find", "wait"],
    ],
    // One write per step (issue 17): completeTasks with next is fuzzed too.
    [
      "a step that drops its next task's runAt",
      () =>
        new (class extends InMemoryBackend {
          override async completeTasks(completions: readonly TaskCompletion[]): Promise<CompletionOutcome[]> {
            return super.completeTasks(
              completions.map((c) =>
                c.next?.kind === "AtTask" ? { ...c, next: { kind: "AtTask", taskId: c.next.taskId } } : c,
              ),
            );
          }
        })(),
      ["complete", "work"],
    ],
    // Operating a store (issue 19): result reads, claim listings and purges are fuzzed too.
    [
      "a purge that skips cancelled workflows",
      () =>
        new (class extends InMemoryBackend {
          override async purgeFinished(options: PurgeOptions): Promise<number> {
            const cancelled = [...this.store.instances].filter(([, s]) => s.status === "Cancelled");
            for (const [id] of cancelled) this.store.finished.remove(id);
            return super.purgeFinished(options);
          }
        })(),
      ["purge"],
    ],
    [
      "a result read that ignores a workflow's completion",
      () =>
        new (class extends InMemoryBackend {
          override async loadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
            const stored = this.store.instances.get(instanceId);
            if (stored?.status === "Completed") return new Uint8Array([1]);
            return super.loadTaskResult(instanceId, taskId);
          }
        })(),
      ["taskResult"],
    ],
    [
      "a claim listing that shows revoked claims",
      () =>
        new (class extends InMemoryBackend {
          override async loadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
            return [...(this.store.claims.get(instanceId)?.values() ?? [])].map((c) => ({ ...c }));
          }
        })(),
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
});

/**
 * Fuzzes a deliberately broken in-memory backend (seed 42): it must fail. Returns the shrunk
 * sequence, cut after the step that diverges (replayed on a fresh one; shrinking keeps at least
 * one operation after the setup even when the divergence comes earlier).
 */
async function catches(make: () => InMemoryBackend, numRuns: number): Promise<Op[]> {
  const sloppy = make();
  const stats = { runs: 0, ops: 0 };
  const details = await fc.check(property([sloppy, sloppy.connect(), sloppy.connect()], "sloppy", stats), {
    numRuns,
    seed: 42,
  });
  expect(details.failed).toBe(true);
  const ops = details.counterexample?.[0] as Op[];
  const replay = make();
  const reference = new InMemoryBackend();
  const ids = laneIds(`replay-${++runCounter}`);
  const result = await runSequence(
    new Lane("sloppy", [replay, replay.connect(), replay.connect()], ids),
    new Lane("memory", [reference], ids),
    ops,
  );
  return result !== null && typeof result !== "string" ? ops.slice(0, result.step + 1) : ops;
}
