import type { PersistentBackend } from "@sayiir/persistence-core";
import { eventually, queued, uid } from "@sayiir/persistence-core/conformance";
import { afterAll, describe, expect, it } from "vitest";
import { LEASED_INDEX, READY_INDEX, TIMER_INDEX } from "../src/index.js";
import { layoutFor, quoteIdentifier } from "../src/layout.js";
import { statements } from "../src/sql.js";
import {
  adminPool,
  closeAdminPools,
  createSubject,
  type PostgresSubject,
  serverName,
  servers,
} from "./subject.js";

/**
 * waitForTasks' probe (probeWakeUp, src/sql-wake.ts), run as the backend sends it: what it
 * answers, and what it reads over a million rows (EXPLAIN, as test/explain.test.ts does).
 */

afterAll(closeAdminPools);

/** A claim-next claim on the one ready task of `queue`. */
async function claimOne(backend: PersistentBackend, queue: string, ttlMs: number | null = 60_000) {
  const [task] = await backend.claimAvailableTasks("w", 1, ttlMs, { queues: [queue] });
  if (task === undefined) throw new Error(`nothing to claim in ${queue}`);
  return task;
}

interface ProbeRow {
  ready: boolean;
  next_due: string | null;
}

/** Runs the probe statement of `subject`'s schema for `queues`, as the backend sends it. */
async function probe(subject: PostgresSubject, agingMs: number, queues: string[]) {
  const sql = statements(layoutFor(subject.schema), agingMs);
  const r = await adminPool(subject.server.url).query<ProbeRow>(sql.probeWakeUp, [queues]);
  const row = r.rows[0];
  return { ready: row?.ready, nextDueAt: row?.next_due == null ? null : Number(row.next_due) };
}

describe.skipIf(servers.length === 0)("wake-ups: the probe", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("next due: the earliest due_at of the queues' timers, across priorities (keys shift by agingMs), and the earliest lease end", async () => {
        const agingMs = 1_000;
        const subject = await createSubject({ agingMs }, {}, server);
        try {
          const { backend } = subject;
          const q = uid("q");
          const now = Date.now();
          expect(await probe(subject, agingMs, [q])).toEqual({ ready: false, nextDueAt: null });
          // B comes first by key (13 s - 2 x agingMs), A is due first (10 s, key 10 s + 2 x agingMs).
          await backend.saveSnapshot(queued(uid("b"), q, now + 13_000, 1));
          await backend.saveSnapshot(queued(uid("a"), q, now + 10_000, 5));
          await backend.saveSnapshot(queued(uid("c"), q, now + 60_000, 3));
          expect(await probe(subject, agingMs, [q])).toEqual({ ready: false, nextDueAt: now + 10_000 });
          // Another queue's earlier timer does not count, unless that queue is probed too.
          const other = uid("other");
          await backend.saveSnapshot(queued(uid(), other, now + 5_000));
          expect((await probe(subject, agingMs, [q])).nextDueAt).toBe(now + 10_000);
          expect((await probe(subject, agingMs, [q, other])).nextDueAt).toBe(now + 5_000);
          // A claim-next claim's lease (its expiry) when it ends first.
          const leased = uid("leased");
          await backend.saveSnapshot(queued(uid(), leased));
          expect(await probe(subject, agingMs, [leased])).toEqual({ ready: true, nextDueAt: null });
          const task = await claimOne(backend, leased, 3_000);
          const expiresAt = task.claim.expiresAt ?? 0;
          const seen = await probe(subject, agingMs, [leased, q]);
          expect(seen.ready).toBe(false);
          expect(seen.nextDueAt).toBeGreaterThanOrEqual(expiresAt);
          expect(seen.nextDueAt).toBeLessThanOrEqual(expiresAt + 1);
          // A claim without ttl never ends by time.
          await backend.releaseTaskClaim(task.instanceId, task.taskId, "w");
          await claimOne(backend, leased, null);
          expect(await probe(subject, agingMs, [leased])).toEqual({ ready: false, nextDueAt: null });
        } finally {
          await subject.backend.close();
          await subject.cleanup();
        }
      });

      it("ready by each part of claim-next's candidates: a ready task, a due timer, an expired lease", async () => {
        const agingMs = 1_000;
        const subject = await createSubject({ agingMs }, {}, server);
        try {
          const { backend } = subject;
          const fresh = uid("fresh");
          await backend.saveSnapshot(queued(uid(), fresh));
          expect((await probe(subject, agingMs, [fresh])).ready).toBe(true);
          // A task claimed by claimTask (a claims row, no lease) is not claimable.
          const held = uid("held");
          const id = uid();
          await backend.saveSnapshot(queued(id, held));
          await backend.claimTask(id, "t1", "w", 60_000);
          expect((await probe(subject, agingMs, [held])).ready).toBe(false);

          const timer = uid("timer");
          const dueAt = Date.now() + 300;
          await backend.saveSnapshot(queued(uid(), timer, dueAt));
          expect(await probe(subject, agingMs, [timer])).toEqual({ ready: false, nextDueAt: dueAt });
          await eventually("the timer due", async () =>
            (await probe(subject, agingMs, [timer])).ready ? true : undefined,
          );
          expect(Date.now()).toBeGreaterThanOrEqual(dueAt);

          const expiring = uid("expiring");
          await backend.saveSnapshot(queued(uid(), expiring));
          const task = await claimOne(backend, expiring, 300);
          expect((await probe(subject, agingMs, [expiring])).ready).toBe(false);
          await eventually("the lease expired", async () =>
            (await probe(subject, agingMs, [expiring])).ready ? true : undefined,
          );
          expect(Date.now()).toBeGreaterThanOrEqual(task.claim.expiresAt ?? 0);
        } finally {
          await subject.backend.close();
          await subject.cleanup();
        }
      });
    });
  }
});

function planText(rows: Array<Record<string, string>>): string {
  return rows.map((r) => Object.values(r)[0]).join("\n");
}

/** Shared buffers (hit + read) the whole statement touched, from EXPLAIN (ANALYZE, BUFFERS)'s top node. */
function buffersOf(plan: string): number {
  const line = plan.split("\n").find((l) => l.includes("Buffers:")) ?? "";
  const hit = Number(/shared hit=(\d+)/.exec(line)?.[1] ?? 0);
  const read = Number(/read=(\d+)/.exec(line)?.[1] ?? 0);
  return hit + read;
}

describe.skipIf(servers.length === 0)("wake-ups: the probe's plan", () => {
  for (const server of servers) {
    it(`${serverName(server)}: over a million rows of other queues and future-dated timers it reads a few index pages, no Seq Scan (custom and generic plans)`, async () => {
      const agingMs = 60_000;
      const subject = await createSubject({ agingMs }, {}, server);
      try {
        const s = quoteIdentifier(subject.schema);
        const admin = adminPool(server.url);
        const insert = (where: string, count: number, columns: string, values: string) =>
          admin.query(
            `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, updated_at, position_task_id, queue, ${columns})
             SELECT '${where}-' || g, 'h', '\\x00'::bytea, false, 1700000000000 + g, 't1', ${values} FROM generate_series(1, ${count}) g`,
          );
        // 400,000 ready tasks of another queue and 100,000 of its leases, far off; 300,000 timers
        // of a third queue, dense (one a millisecond, in 2100); 200,000 timers of the probed
        // queue, from 2100 on (one a second).
        await insert("ready", 400_000, "ready_task_id, ready_key", "'other', 't1', 1700000000000 + g");
        await insert(
          "dense-timer",
          300_000,
          "due_task_id, due_at, due_key",
          "'dense', 't1', 4102444800000 + g, 4102444800000 + g",
        );
        await insert(
          "other-lease",
          100_000,
          "ready_task_id, ready_key, claimed_until",
          "'other', 't1', 1700000000000 + g, now() + interval '1 day'",
        );
        await insert(
          "timer",
          200_000,
          "due_task_id, due_at, due_key",
          "'probe', 't1', 4102444800000 + g * 1000, 4102444800000 + g * 1000",
        );
        await subject.backend.saveSnapshot(queued(uid(), "probe"));
        await claimOne(subject.backend, "probe", 3_600_000);
        await admin.query(`VACUUM ANALYZE ${s}.snapshots`);

        const sql = statements(layoutFor(subject.schema), agingMs);
        const client = await admin.connect();
        try {
          const custom = planText(
            (await client.query(`EXPLAIN (ANALYZE, BUFFERS) ${sql.probeWakeUp}`, [["probe"]])).rows,
          );
          await client.query("SET plan_cache_mode = force_generic_plan");
          await client.query(`PREPARE probe(text[]) AS ${sql.probeWakeUp}`);
          const generic = planText(
            (await client.query("EXPLAIN (ANALYZE, BUFFERS) EXECUTE probe('{probe}')")).rows,
          );
          const dense = planText(
            (await client.query("EXPLAIN (ANALYZE, BUFFERS) EXECUTE probe('{probe,dense}')")).rows,
          );
          const ready = planText(
            (await client.query("EXPLAIN (ANALYZE, BUFFERS) EXECUTE probe('{probe,dense,other}')")).rows,
          );
          await client.query("DEALLOCATE probe");
          await client.query("RESET plan_cache_mode");
          console.log(
            `[${serverName(server)}] EXPLAIN probeWakeUp (custom):\n${custom}\n\n(generic):\n${generic}`,
          );
          for (const plan of [custom, generic, dense, ready]) {
            expect(plan).not.toMatch(/Seq Scan/);
            expect(plan).toContain(READY_INDEX);
            expect(plan).toContain(TIMER_INDEX);
            expect(plan).toContain(LEASED_INDEX);
            expect(buffersOf(plan)).toBeLessThan(100);
          }
        } finally {
          client.release();
        }
        expect(await probe(subject, agingMs, ["dense"])).toEqual({ ready: false, nextDueAt: 4102444800001 });
        expect(await probe(subject, agingMs, ["probe", "other"])).toEqual({ ready: true, nextDueAt: null });
        const answer = await probe(subject, agingMs, ["probe", "dense"]);
        expect(answer.ready).toBe(false);
        expect(answer.nextDueAt).toBeGreaterThan(Date.now() + 3_500_000);
        expect(answer.nextDueAt).toBeLessThan(Date.now() + 3_700_000);
      } finally {
        await subject.backend.close();
        await subject.cleanup();
      }
    }, 300_000);
  }
});
