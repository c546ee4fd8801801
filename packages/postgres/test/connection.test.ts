import { BackendError, ErrorCode } from "@sayiir/persistence-core";
import { atTask, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { PostgresBackend } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";
import { adminPool, closeAdminPools, createSubject, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Terminates every server connection opened with this application_name; returns how many. */
async function terminate(url: string, app: string): Promise<number> {
  const r = await adminPool(url).query(
    "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
    [app],
  );
  return r.rows[0].n;
}

/** Waits until a connection of this application is blocked on a lock; returns its pid. */
async function waitForLockWait(url: string, app: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const r = await adminPool(url).query(
      "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
      [app],
    );
    if (r.rows[0]) return r.rows[0].pid;
    await sleep(10);
  }
  throw new Error("no connection waited on the lock");
}

/** Holds the row lock of a snapshot on an admin connection until the returned function is called. */
async function holdRowLock(url: string, schema: string, instanceId: string): Promise<() => Promise<void>> {
  const client = await adminPool(url).connect();
  await client.query("BEGIN");
  await client.query(`SELECT 1 FROM ${quoteIdentifier(schema)}.snapshots WHERE instance_id = $1 FOR UPDATE`, [
    instanceId,
  ]);
  return async () => {
    await client.query("ROLLBACK");
    client.release();
  };
}

describe.skipIf(servers.length === 0)("connections", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("pg_terminate_backend during a blocked write: BackendError at once, and the pool recovers", async () => {
        const app = uid("kill").slice(0, 40);
        const subject = await createSubject({}, {}, server);
        await subject.backend.close();
        const backend = new PostgresBackend({
          poolConfig: { connectionString: server.url, application_name: app, max: 4 },
          schema: subject.schema,
        });
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const unlock = await holdRowLock(server.url, subject.schema, id);
          const started = Date.now();
          const pending = rejection(backend.saveTaskResult(id, "t1", text("x")));
          await waitForLockWait(server.url, app);
          expect(await terminate(server.url, app)).toBeGreaterThan(0);
          const error = await pending;
          expect(Date.now() - started).toBeLessThan(5_000);
          expect(error).toBeInstanceOf(BackendError);
          expect(error).toMatchObject({ code: ErrorCode.Backend });
          await unlock();
          // The broken connection was discarded: the next operations get fresh ones and succeed.
          await backend.saveTaskResult(id, "t1", text("after"));
          const loaded = await backend.loadSnapshot(id);
          expect(loaded.state.kind === "InProgress" && loaded.state.lastCompletedTaskId).toBe("t1");
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("connections killed repeatedly mid-run: only BackendErrors, each bounded, then everything works", async () => {
        const app = uid("churn").slice(0, 40);
        const subject = await createSubject({}, {}, server);
        await subject.backend.close();
        const backend = new PostgresBackend({
          poolConfig: { connectionString: server.url, application_name: app, max: 4 },
          schema: subject.schema,
          statementTimeoutMs: 5_000,
        });
        try {
          const ids = Array.from({ length: 8 }, () => uid());
          for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }));
          let stop = false;
          const errors: unknown[] = [];
          let ok = 0;
          let slowest = 0;
          const worker = async (w: number) => {
            for (let i = 0; !stop; i++) {
              const id = ids[(w + i) % ids.length] as string;
              const started = Date.now();
              try {
                if (i % 4 === 0) await backend.saveTaskResult(id, `side-${w}-${i}`, text("x"));
                else if (i % 4 === 1) await backend.loadSnapshot(id);
                else if (i % 4 === 2) await backend.findAvailableTasks(`w${w}`, 5);
                else await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }));
                ok++;
              } catch (error) {
                errors.push(error);
              }
              slowest = Math.max(slowest, Date.now() - started);
            }
          };
          const running = Promise.all([0, 1, 2, 3].map(worker));
          let killed = 0;
          for (let round = 0; round < 5; round++) {
            await sleep(150);
            killed += await terminate(server.url, app);
          }
          await sleep(200);
          stop = true;
          await running;
          expect(killed).toBeGreaterThan(0);
          expect(ok).toBeGreaterThan(0);
          for (const error of errors) expect(error).toMatchObject({ code: ErrorCode.Backend });
          expect(slowest).toBeLessThan(5_000);
          // Recovered: every operation works again.
          for (const id of ids) expect((await backend.loadSnapshot(id)).instanceId).toBe(id);
          expect(await backend.claimTask(ids[0] as string, "t1", "w", 1_000)).not.toBeNull();
          console.log(
            `[${serverName(server)}] churn: ${killed} connections killed, ${ok} ops ok, ${errors.length} BackendErrors, slowest ${slowest} ms`,
          );
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("statement_timeout bounds a statement stuck on a lock (BackendError with the server's cause)", async () => {
        const subject = await createSubject({}, { statementTimeoutMs: 300 }, server);
        const { backend, schema } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const unlock = await holdRowLock(server.url, schema, id);
          const started = Date.now();
          const error = await rejection(backend.saveTaskResult(id, "t1", text("x")));
          const took = Date.now() - started;
          await unlock();
          expect(error).toBeInstanceOf(BackendError);
          expect((error as { cause?: { code?: string } }).cause?.code).toBe("57014"); // query_canceled
          expect(took).toBeGreaterThanOrEqual(250);
          expect(took).toBeLessThan(3_000);
          await backend.saveTaskResult(id, "t1", text("x"));
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("an unreachable server gives BackendError within the connection timeout, without the password", async () => {
        const backend = new PostgresBackend({
          connectionString: "postgres://someone:sup3r-secret-pw@10.255.255.1:5432/db",
          connectionTimeoutMs: 300,
          schema: testSchema(),
        });
        const started = Date.now();
        const error = await rejection(backend.loadSnapshot("x"));
        expect(Date.now() - started).toBeLessThan(3_000);
        expect(error).toBeInstanceOf(BackendError);
        expect(String((error as Error).message)).not.toContain("sup3r-secret-pw");
        await backend.close();
      });

      it("a caller's pool is used as is and left open by close()", async () => {
        const schema = testSchema();
        const pool = new pg.Pool({ connectionString: server.url, max: 2 });
        try {
          const backend = new PostgresBackend({ pool, schema });
          await backend.migrate();
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          await backend.close();
          expect((await pool.query("SELECT 1 AS one")).rows[0].one).toBe(1);
          const again = new PostgresBackend({ pool, schema });
          expect(await again.listSnapshots()).toEqual([id]);
          await again.close();
        } finally {
          await dropSchema(server.url, schema);
          await pool.end();
        }
      });
    });
  }
});
