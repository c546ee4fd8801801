import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, claimOrFail, expectCode, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { quoteIdentifier } from "../src/layout.js";
import { adminPool, closeAdminPools, createSubject, type PostgresSubject, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

interface Where {
  slot: { task: string | null; worker: string | null; token: number | null };
  claims: Array<{ task_id: string; worker_id: string; token: number }>;
}

/** Where the instance's claims live: the snapshot row's slot and its claims rows. */
async function claimsOf(subject: PostgresSubject, url: string, id: string): Promise<Where> {
  const s = quoteIdentifier(subject.schema);
  const slot = await adminPool(url).query<{
    task: string | null;
    worker: string | null;
    token: number | null;
  }>(
    `SELECT claim_task AS task, claim_worker AS worker, claim_token::float8 AS token FROM ${s}.snapshots WHERE instance_id = $1`,
    [id],
  );
  const claims = await adminPool(url).query<{ task_id: string; worker_id: string; token: number }>(
    `SELECT task_id, worker_id, token::float8 AS token FROM ${s}.claims WHERE instance_id = $1 ORDER BY task_id`,
    [id],
  );
  return { slot: slot.rows[0] ?? { task: null, worker: null, token: null }, claims: claims.rows };
}

// Claim-next keeps its claim in the snapshot row's slot (schema version 6); claimTask, and
// claim-next when the slot holds another task's claim or a claims row exists, use the claims table.
describe.skipIf(servers.length === 0)("the claim slot of the snapshot row", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("claim-next writes no claims row: the claim is in the row, and completion empties it", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const [task] = await backend.claimAvailableTasks("w1", 1, 60_000);
          if (task === undefined) throw new Error("nothing claimed");
          expect(await claimsOf(subject, server.url, id)).toEqual({
            slot: { task: "t1", worker: "w1", token: task.claim.token },
            claims: [],
          });
          expect(await backend.completeTasks([{ claim: task.claim, output: text("x") }])).toEqual([null]);
          expect(await claimsOf(subject, server.url, id)).toEqual({
            slot: { task: null, worker: null, token: null },
            claims: [],
          });
          // Completing it twice: the slot is empty, ClaimLost.
          const [again] = await backend.completeTasks([{ claim: task.claim, output: text("y") }]);
          expect(again?.code).toBe(ErrorCode.ClaimLost);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a slot holding another task's claim: claim-next claims the next task in the claims table; both fence and release", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const [first] = await backend.claimAvailableTasks("w1", 1, 60_000);
          if (first === undefined) throw new Error("nothing claimed");
          // The holder moves the workflow on (fenced) without releasing yet.
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }), {
            claim: first.claim,
          });
          const [second] = await backend.claimAvailableTasks("w2", 1, 60_000);
          if (second === undefined) throw new Error("t2 not claimed");
          expect(second.taskId).toBe("t2");
          expect(await claimsOf(subject, server.url, id)).toEqual({
            slot: { task: "t1", worker: "w1", token: first.claim.token },
            claims: [{ task_id: "t2", worker_id: "w2", token: second.claim.token }],
          });
          expect(await backend.findAvailableTasks("probe", 10)).toEqual([]);
          await backend.saveTaskResult(id, "t2", text("2"), { claim: second.claim });
          await backend.extendTaskClaim(id, "t1", "w1", 30_000);
          await expectCode(backend.releaseTaskClaim(id, "t1", "w2"), ErrorCode.ClaimLost);
          await backend.releaseTaskClaim(id, "t1", "w1");
          await backend.releaseTaskClaim(id, "t2", "w2");
          expect(await claimsOf(subject, server.url, id)).toEqual({
            slot: { task: null, worker: null, token: null },
            claims: [],
          });
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("claimTask over the slot's task: refused while live, a takeover in the slot once expired (larger token)", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const [task] = await backend.claimAvailableTasks("w1", 1, 200);
          if (task === undefined) throw new Error("nothing claimed");
          expect(await backend.claimTask(id, "t1", "w2", 60_000)).toBeNull();
          await sleep(300);
          const taken = await claimOrFail(backend, id, "t1", "w2", 60_000);
          expect(taken.token).toBeGreaterThan(task.claim.token);
          expect(await claimsOf(subject, server.url, id)).toEqual({
            slot: { task: "t1", worker: "w2", token: taken.token },
            claims: [],
          });
          const [stale] = await backend.completeTasks([{ claim: task.claim, output: text("stale") }]);
          expect(stale?.code).toBe(ErrorCode.ClaimLost);
          expect(await backend.completeTasks([{ claim: taken, output: text("ok") }])).toEqual([null]);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a claims row left by version 5 is honoured: claim-next skips it while live and takes it over in the claims table", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const old = await claimOrFail(backend, id, "t1", "w0", 200);
          expect((await claimsOf(subject, server.url, id)).claims).toHaveLength(1);
          expect(await backend.claimAvailableTasks("w1", 1, 60_000)).toEqual([]);
          await sleep(300);
          const [task] = await backend.claimAvailableTasks("w1", 1, 60_000);
          if (task === undefined) throw new Error("not taken over");
          expect(task.attempt).toBe(2);
          expect(await claimsOf(subject, server.url, id)).toEqual({
            slot: { task: null, worker: null, token: null },
            claims: [{ task_id: "t1", worker_id: "w1", token: task.claim.token }],
          });
          const [stale] = await backend.completeTasks([{ claim: old, output: text("stale") }]);
          expect(stale?.code).toBe(ErrorCode.ClaimLost);
          expect(await backend.completeTasks([{ claim: task.claim, output: text("ok") }])).toEqual([null]);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a task's life writes the snapshot row twice and the result once, no claims row", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend } = subject;
        const client = await adminPool(server.url).connect();
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          // The statistics are flushed asynchronously (about once a second): read until they settle.
          const counts = async () => {
            await client.query("SELECT pg_stat_clear_snapshot()");
            const r = await client.query<{ relname: string; n: number }>(
              `SELECT relname, (n_tup_ins + n_tup_upd + n_tup_del)::float8 AS n FROM pg_stat_user_tables WHERE schemaname = $1`,
              [subject.schema],
            );
            return Object.fromEntries(r.rows.map((row) => [row.relname, row.n])) as Record<string, number>;
          };
          let before = await counts();
          for (let i = 0; i < 40 && (before.snapshots ?? 0) < 1; i++) {
            await sleep(250);
            before = await counts();
          }
          await sleep(1_500);
          before = await counts();
          const [task] = await backend.claimAvailableTasks("w1", 1, 60_000);
          if (task === undefined) throw new Error("nothing claimed");
          expect(await backend.completeTasks([{ claim: task.claim, output: text("x") }])).toEqual([null]);
          let delta: Record<string, number> = {};
          const settle = async () => {
            const after = await counts();
            delta = Object.fromEntries(Object.entries(after).map(([k, n]) => [k, n - (before[k] ?? 0)]));
          };
          for (let i = 0; i < 40; i++) {
            await settle();
            if ((delta.snapshots ?? 0) >= 2 && (delta.task_results ?? 0) >= 1) break;
            await sleep(250);
          }
          await sleep(1_500);
          await settle();
          expect(delta).toMatchObject({ snapshots: 2, task_results: 1, claims: 0, task_attempts: 0 });
        } finally {
          client.release();
          await backend.close();
          await subject.cleanup();
        }
      });
    });
  }
});
