import { markCancelled } from "@sayiir/persistence-core";
import { toStoredSnapshot } from "@sayiir/persistence-core/adapter";
import { atTask, claimOrFail, finished, text, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { FINISHED_INDEX, LATEST_VERSION, MIGRATIONS, PostgresBackend } from "../src/index.js";
import { type Layout, layoutFor, quoteIdentifier } from "../src/layout.js";
import { adminPool, closeAdminPools, createSubject, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

/** The stored finish time of an instance (null: none; undefined: no row). */
async function finishedAtOf(url: string, schema: string, id: string): Promise<number | null | undefined> {
  const r = await adminPool(url).query<{ at: number | null }>(
    `SELECT finished_at::float8 AS at FROM ${quoteIdentifier(schema)}.snapshots WHERE instance_id = $1`,
    [id],
  );
  return r.rows[0]?.at;
}

/** How many rows each table still holds for these instances. */
async function leftovers(url: string, l: Layout, ids: readonly string[]): Promise<Record<string, number>> {
  const tables = {
    snapshots: l.snapshots,
    results: l.taskResults,
    claims: l.claims,
    events: l.events,
    attempts: l.attempts,
  };
  const out: Record<string, number> = {};
  for (const [name, table] of Object.entries(tables)) {
    const r = await adminPool(url).query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${table} WHERE instance_id = ANY($1::text[])`,
      [ids],
    );
    out[name] = r.rows[0]?.n ?? -1;
  }
  return out;
}

const none = { snapshots: 0, results: 0, claims: 0, events: 0, attempts: 0 };

describe.skipIf(servers.length === 0)("retention: finish time and purge", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("each finishing write records the server's clock once; a terminal re-save keeps it; unfinished rows have none", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        const at = (id: string) => finishedAtOf(server.url, schema, id);
        try {
          const before = Date.now();
          // The fixtures' updatedAt is in 2023: the finish time is the server's now, not it.
          const saved = finished(uid("saved"), { kind: "Completed", finalOutput: text("done") });
          await backend.saveSnapshot(saved);
          const stepped = uid("stepped");
          await backend.saveSnapshot(atTask(stepped, "t1"));
          const claim = await claimOrFail(backend, stepped, "t1", "w");
          const next = { kind: "Failed" as const, error: "boom" };
          expect(await backend.completeTasks([{ claim, output: text("x"), next }])).toEqual([null]);
          const cancelled = uid("cancelled");
          await backend.saveSnapshot(atTask(cancelled, "t1"));
          await backend.cancelWorkflow(cancelled);
          const paused = uid("paused");
          await backend.saveSnapshot(atTask(paused, "t1"));
          await backend.pauseWorkflow(paused);
          const after = Date.now();
          const first: Record<string, number> = {};
          for (const id of [saved.instanceId, stepped, cancelled]) {
            const value = await at(id);
            if (typeof value !== "number") throw new Error(`${id}: no finish time`);
            expect(value).toBeGreaterThanOrEqual(before - 50);
            expect(value).toBeLessThanOrEqual(after + 50);
            first[id] = value;
          }
          expect(await at(paused)).toBeNull();
          // Terminal -> terminal re-saves, later: every finish time stays the first one.
          await new Promise((resolve) => setTimeout(resolve, 30));
          await backend.saveSnapshot({ ...saved, updatedAt: saved.updatedAt + 1 });
          const loaded = await backend.loadSnapshot(cancelled);
          await backend.saveSnapshot({ ...loaded, updatedAt: loaded.updatedAt + 1 });
          for (const id of [saved.instanceId, cancelled]) expect(await at(id)).toBe(first[id]);
          // Deleted and saved again unfinished: a new life, no finish time.
          await backend.deleteSnapshot(saved.instanceId);
          await backend.saveSnapshot(atTask(saved.instanceId, "t1"));
          expect(await at(saved.instanceId)).toBeNull();
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a version-6 store migrates: finished rows get their updated_at as finish time, and purge finds them by it", async () => {
        const schema = testSchema();
        const l = layoutFor(schema);
        const admin = adminPool(server.url);
        let backend: PostgresBackend | undefined;
        try {
          await admin.query(`CREATE SCHEMA ${l.s}`);
          await admin.query(
            `CREATE TABLE ${l.migrations} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
          );
          for (const m of MIGRATIONS.filter((m) => m.version <= 6)) {
            await admin.query(m.sql(l));
            await admin.query(`INSERT INTO ${l.migrations} (version, name) VALUES ($1, $2)`, [
              m.version,
              m.name,
            ]);
          }
          // Rows as a version-6 process wrote them (no finish time column yet).
          const insert = async (snapshot: Parameters<typeof toStoredSnapshot>[0]) => {
            const st = toStoredSnapshot(snapshot);
            await admin.query(
              `INSERT INTO ${l.snapshots} (instance_id, definition_hash, header, finished, cancelled,
                 last_completed_task_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
              [
                st.instanceId,
                st.definitionHash,
                Buffer.from(st.header),
                st.finished,
                st.status === "Cancelled",
                st.lastCompletedTaskId,
                st.updatedAt,
              ],
            );
            for (const r of st.results) {
              await admin.query(
                `INSERT INTO ${l.taskResults} (instance_id, task_id, output) VALUES ($1, $2, $3)`,
                [st.instanceId, r.taskId, Buffer.from(r.output)],
              );
            }
          };
          const T = 1_600_000_000_000;
          await insert({
            ...finished("v6-completed", { kind: "Completed", finalOutput: text("a") }),
            updatedAt: T,
          });
          await insert({ ...finished("v6-failed", { kind: "Failed", error: "b" }), updatedAt: T + 1000 });
          const running = atTask("v6-cancelled", "t2", { completed: { t1: text("one") } });
          await insert(markCancelled(running, { reason: "old" }, T + 2000));
          await admin.query(
            `INSERT INTO ${l.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at)
             VALUES ('v6-cancelled', 't2', 'old', nextval(${l.tokenSequence}), now(), to_timestamp(0))`,
          );
          // Unfinished, and older than all of them: never purged.
          await insert(atTask("v6-running", "t1", { updatedAt: T - 1000 }));

          backend = new PostgresBackend({ connectionString: server.url, schema });
          expect(await backend.migrate()).toEqual({ applied: [7], version: LATEST_VERSION });
          const at = (id: string) => finishedAtOf(server.url, schema, id);
          expect(await at("v6-completed")).toBe(T);
          expect(await at("v6-failed")).toBe(T + 1000);
          expect(await at("v6-cancelled")).toBe(T + 2000);
          expect(await at("v6-running")).toBeNull();
          const index = await admin.query<{ def: string }>(
            "SELECT indexdef AS def FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
            [schema, FINISHED_INDEX],
          );
          expect(index.rows[0]?.def).toMatch(
            /\(finished_at, instance_id\) WHERE \(finished_at IS NOT NULL\)/,
          );

          // Strictly before the cut-off: the one finished at T + 1000 stays.
          expect(await backend.purgeFinished({ finishedBefore: T + 1000, limit: 10 })).toBe(1);
          expect(await backend.listSnapshots()).toEqual(["v6-cancelled", "v6-failed", "v6-running"]);
          expect(await backend.loadTaskResult("v6-cancelled", "t1")).toEqual(text("one"));
          expect(await backend.purgeFinished({ finishedBefore: Date.now(), limit: 10 })).toBe(2);
          expect(await backend.listSnapshots()).toEqual(["v6-running"]);
          expect(await leftovers(server.url, l, ["v6-completed", "v6-failed", "v6-cancelled"])).toEqual(none);
          expect((await backend.loadSnapshot("v6-running")).state.kind).toBe("InProgress");
        } finally {
          await backend?.close();
          await dropSchema(server.url, schema);
        }
      });

      it("two clients purging at once: their counts add up to the finished workflows, none is left, nothing else is touched", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        const l = layoutFor(schema);
        const clients = [await subject.connect(), await subject.connect()] as PostgresBackend[];
        try {
          const done: string[] = [];
          const kept: string[] = [];
          const make = async (i: number) => {
            const id = `wf-${String(i).padStart(3, "0")}`;
            if (i % 5 === 4) {
              kept.push(id);
              await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
              await backend.sendEvent(id, "e", text("kept"));
              return;
            }
            done.push(id);
            if (i % 5 === 0) {
              await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("x") }));
              return;
            }
            // Cancelled with a result and a claims row (revoked: the cancel keeps the row and token).
            await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
            await claimOrFail(backend, id, "t2", "w");
            await backend.cancelWorkflow(id);
          };
          for (let i = 0; i < 150; i += 10) {
            await Promise.all(Array.from({ length: 10 }, (_, k) => make(i + k)));
          }
          const cutoff = Date.now() + 1000;
          const drain = async (client: PostgresBackend) => {
            const counts: number[] = [];
            for (;;) {
              const n = await client.purgeFinished({ finishedBefore: cutoff, limit: 4 });
              expect(n).toBeLessThanOrEqual(4);
              if (n === 0) return counts;
              counts.push(n);
            }
          };
          const [a, b] = await Promise.all(clients.map(drain));
          const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
          expect(sum(a ?? []) + sum(b ?? [])).toBe(done.length);
          // Both took part (30 calls are needed in all, and they start together).
          expect([a?.length ?? 0, b?.length ?? 0].every((n) => n > 0)).toBe(true);
          expect(done.length).toBe(120);
          expect(await leftovers(server.url, l, done)).toEqual(none);
          expect((await backend.listSnapshots()).sort()).toEqual(kept.sort());
          expect(await leftovers(server.url, l, kept)).toEqual({
            ...none,
            snapshots: 30,
            results: 30,
            events: 30,
          });
          expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 100 })).toBe(0);
        } finally {
          await Promise.all(clients.map((c) => c.close()));
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a finished row another transaction holds is skipped, not waited for; a later call takes it", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        const held = await adminPool(server.url).connect();
        try {
          const older = uid("older");
          const newer = uid("newer");
          await backend.saveSnapshot(finished(older, { kind: "Completed", finalOutput: text("1") }));
          await new Promise((resolve) => setTimeout(resolve, 20));
          await backend.saveSnapshot(finished(newer, { kind: "Completed", finalOutput: text("2") }));
          await held.query("BEGIN");
          await held.query(
            `SELECT 1 FROM ${quoteIdentifier(schema)}.snapshots WHERE instance_id = $1 FOR UPDATE`,
            [older],
          );
          const cutoff = Date.now() + 1000;
          const purge = backend.purgeFinished({ finishedBefore: cutoff, limit: 1 });
          const waited = new Promise<"waited">((resolve) => setTimeout(() => resolve("waited"), 5000));
          expect(await Promise.race([purge, waited])).toBe(1);
          expect(await backend.listSnapshots()).toEqual([older]);
          await held.query("COMMIT");
          expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 1 })).toBe(1);
          expect(await backend.listSnapshots()).toEqual([]);
        } finally {
          await held.query("ROLLBACK").catch(() => {});
          held.release();
          await backend.close();
          await subject.cleanup();
        }
      });
    });
  }
});
