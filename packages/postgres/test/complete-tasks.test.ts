import { ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, claimOrFail, finished, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import type { PostgresBackend } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";
import { adminPool, closeAdminPools, createSubject, serverName, statementCounter } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const dec = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));

describe.skipIf(servers.length === 0)("completeTasks on PostgreSQL", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("a batch mixing good, stale, expired, missing and finished items, several per instance", async () => {
        const subject = await createSubject({}, {}, server);
        const backend = subject.backend;
        try {
          const [a, missing, done] = [uid("a"), uid("missing"), uid("done")];
          await backend.saveSnapshot(atTask(a, "t1"));
          await backend.saveSnapshot(finished(done, { kind: "Completed", finalOutput: text("end") }));
          const good1 = await claimOrFail(backend, a, "t1", "w1", 60_000);
          const stale = await claimOrFail(backend, a, "t2", "w1", 60_000);
          await backend.releaseTaskClaim(a, "t2", "w1");
          const retaken = await claimOrFail(backend, a, "t2", "w2", 60_000);
          const expired = await claimOrFail(backend, a, "t3", "w1", 100);
          const good2 = await claimOrFail(backend, a, "t4", "w1", 60_000);
          const onMissing = await claimOrFail(backend, missing, "t1", "w1", 60_000);
          const onDoneLive = await claimOrFail(backend, done, "t1", "w1", 60_000);
          const onDoneStale = await claimOrFail(backend, done, "t2", "w1", 60_000);
          await backend.releaseTaskClaim(done, "t2", "w1");
          const lastRefused = await claimOrFail(backend, a, "t5", "w1", 60_000);
          await backend.releaseTaskClaim(a, "t5", "w1");
          await sleep(350);

          const outcomes = await backend.completeTasks(
            [good1, stale, expired, onMissing, good2, onDoneLive, onDoneStale, lastRefused].map((c) => ({
              claim: c,
              output: text(`${c.instanceId}/${c.taskId}`),
            })),
          );
          expect(outcomes.map((o) => o?.code ?? null)).toEqual([
            null,
            ErrorCode.ClaimLost,
            ErrorCode.ClaimLost,
            ErrorCode.NotFound,
            null,
            ErrorCode.Conflict,
            ErrorCode.ClaimLost,
            ErrorCode.ClaimLost,
          ]);

          const loaded = await backend.loadSnapshot(a);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(["t1", "t4"]);
          expect(dec(loaded.state.completedTasks.t4?.output)).toBe(`${a}/t4`);
          // The last item of `a` that landed, in input order (t5 after it was refused).
          expect(loaded.state.lastCompletedTaskId).toBe("t4");
          // Refused items kept their claims: the retaken one is still w2's, the others as they were.
          expect(await backend.claimTask(a, "t2", "probe", 60_000)).toBeNull();
          expect(await backend.claimTask(missing, "t1", "probe", 60_000)).toBeNull();
          expect(await backend.claimTask(done, "t1", "probe", 60_000)).toBeNull();
          // Released ones are gone: the next claim of t1 / t4 succeeds at once.
          expect(await backend.claimTask(a, "t1", "probe", 60_000)).not.toBeNull();
          expect(await backend.claimTask(a, "t4", "probe", 60_000)).not.toBeNull();
          expect(await backend.completeTasks([{ claim: retaken, output: text("late") }])).toEqual([null]);
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("one statement per call, and per claim-next call", async () => {
        const counter = statementCounter();
        const subject = await createSubject({}, { faults: counter.faults }, server);
        const backend = subject.backend;
        try {
          for (let i = 0; i < 8; i++)
            await backend.saveSnapshot(atTask(`i${i}`, "t1", { updatedAt: 1000 + i }));
          let claimed: Awaited<ReturnType<PostgresBackend["claimAvailableTasks"]>> = [];
          expect(
            await counter.count(async () => {
              claimed = await backend.claimAvailableTasks("w", 8, 60_000);
            }),
          ).toBe(1);
          expect(claimed).toHaveLength(8);
          let outcomes: unknown[] = [];
          expect(
            await counter.count(async () => {
              outcomes = await backend.completeTasks(
                claimed.map((t) => ({ claim: t.claim, output: text("x") })),
              );
            }),
          ).toBe(1);
          expect(outcomes).toEqual(claimed.map(() => null));
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("a batch larger than one statement carries is split, outcomes stay in order", async () => {
        const counter = statementCounter();
        const subject = await createSubject({}, { faults: counter.faults }, server);
        const backend = subject.backend;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t0"));
          const claims: TaskClaim[] = [];
          for (let i = 0; i < 2_100; i += 300) {
            claims.push(
              ...(await Promise.all(
                Array.from({ length: Math.min(300, 2_100 - i) }, (_, j) =>
                  claimOrFail(backend, id, `t${i + j}`, "w1", 60_000),
                ),
              )),
            );
          }
          // Every 7th is refused: its claim was released before the call.
          for (let i = 0; i < claims.length; i += 7) await backend.releaseTaskClaim(id, `t${i}`, "w1");
          let outcomes: Awaited<ReturnType<PostgresBackend["completeTasks"]>> = [];
          const statements = await counter.count(async () => {
            outcomes = await backend.completeTasks(claims.map((c) => ({ claim: c, output: text(c.taskId) })));
          });
          expect(statements).toBe(3);
          expect(outcomes.map((o, i) => (i % 7 === 0 ? o?.code : o))).toEqual(
            claims.map((_, i) => (i % 7 === 0 ? ErrorCode.ClaimLost : null)),
          );
          const loaded = await backend.loadSnapshot(id);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(Object.keys(loaded.state.completedTasks)).toHaveLength(2_100 - 300);
          expect(loaded.state.lastCompletedTaskId).toBe("t2099");
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      }, 60_000);

      it("two clients completing overlapping instances in opposite orders never deadlock", async () => {
        const subject = await createSubject({}, {}, server);
        const other = await subject.connect();
        try {
          const ids = Array.from({ length: 12 }, (_, i) => `inst-${String(i).padStart(2, "0")}`);
          for (const id of ids) await subject.backend.saveSnapshot(atTask(id, "t0"));
          for (let round = 0; round < 30; round++) {
            // Each client holds a claim on a task of every instance; one completes them in id
            // order, the other in reverse: row locks are taken in instance order either way.
            const mine = await Promise.all(
              ids.map((id) => claimOrFail(subject.backend, id, `a${round}`, "w1", 60_000)),
            );
            const theirs = await Promise.all(
              ids.map((id) => claimOrFail(other, id, `b${round}`, "w1", 60_000)),
            );
            const [x, y] = await Promise.all([
              subject.backend.completeTasks(mine.map((c) => ({ claim: c, output: text("a") }))),
              other.completeTasks([...theirs].reverse().map((c) => ({ claim: c, output: text("b") }))),
            ]);
            expect([...x, ...y].every((o) => o === null)).toBe(true);
          }
          const loaded = await subject.backend.loadSnapshot(ids[0] as string);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(Object.keys(loaded.state.completedTasks)).toHaveLength(60);
        } finally {
          await other.close();
          await subject.backend.close();
          await subject.cleanup?.();
        }
      }, 60_000);

      it("racing deleteSnapshot: an item lands before the delete or is NotFound, nothing is left behind", async () => {
        const subject = await createSubject({}, {}, server);
        const other = await subject.connect();
        const s = quoteIdentifier(subject.schema);
        try {
          let landed = 0;
          let notFound = 0;
          for (let round = 0; round < 20; round++) {
            const ids = Array.from({ length: 10 }, () => uid());
            for (const id of ids) await subject.backend.saveSnapshot(atTask(id, "t1"));
            const claims = await Promise.all(
              ids.map((id) => claimOrFail(subject.backend, id, "t1", "w1", 60_000)),
            );
            const [outcomes] = await Promise.all([
              subject.backend.completeTasks(claims.map((c) => ({ claim: c, output: text("x") }))),
              Promise.all(ids.filter((_, i) => i % 2 === 0).map((id) => other.deleteSnapshot(id))),
            ]);
            for (const [i, o] of outcomes.entries()) {
              if (o === null) landed++;
              else {
                expect(i % 2).toBe(0);
                expect(o.code).toBe(ErrorCode.NotFound);
                notFound++;
              }
            }
          }
          expect(landed).toBeGreaterThan(0);
          // Deleted instances left no result and no claim; the others no claim either.
          const orphans = await adminPool(server.url).query<{ results: number; claims: number }>(
            `SELECT (SELECT count(*)::int FROM ${s}.task_results r
                      WHERE NOT EXISTS (SELECT 1 FROM ${s}.snapshots x WHERE x.instance_id = r.instance_id)) AS results,
                    (SELECT count(*)::int FROM ${s}.claims) AS claims`,
          );
          expect(orphans.rows[0]).toEqual({ results: 0, claims: 0 });
          console.log(`${serverName(server)}: ${landed} landed, ${notFound} NotFound`);
        } finally {
          await other.close();
          await subject.backend.close();
          await subject.cleanup?.();
        }
      }, 60_000);

      it("racing an unfenced saveSnapshot: the instance holds one write or the other, never a mix", async () => {
        const subject = await createSubject({}, {}, server);
        const other = await subject.connect();
        try {
          for (let round = 0; round < 40; round++) {
            const id = uid();
            await subject.backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_000 }));
            const c = await claimOrFail(subject.backend, id, "t1", "w1", 60_000);
            // The writer replaces the snapshot with one at t9, without results.
            const [outcomes] = await Promise.all([
              subject.backend.completeTasks([{ claim: c, output: text("done") }]),
              other.saveSnapshot(atTask(id, "t9", { updatedAt: 2_000 })),
            ]);
            expect(outcomes).toEqual([null]);
            const loaded = await subject.backend.loadSnapshot(id);
            if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
            const result = dec(loaded.state.completedTasks.t1?.output);
            if (result === undefined) {
              // The write came last: nothing of the completion survives.
              expect(loaded.state.lastCompletedTaskId).toBeNull();
              expect(loaded.updatedAt).toBe(2_000);
            } else {
              // The completion came last, on top of the write.
              expect(result).toBe("done");
              expect(loaded.state.lastCompletedTaskId).toBe("t1");
              expect(loaded.updatedAt).toBeGreaterThan(2_000);
            }
            expect(loaded.state.position).toEqual({ kind: "AtTask", taskId: "t9" });
          }
        } finally {
          await other.close();
          await subject.backend.close();
          await subject.cleanup?.();
        }
      }, 60_000);
    });
  }
});
