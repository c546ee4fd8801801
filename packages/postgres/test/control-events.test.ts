import {
  ErrorCode,
  failures,
  markTaskCompleted,
  type PersistentBackend,
  updatePosition,
} from "@sayiir/persistence-core";
import { REVOKED_EXPIRY, toStoredSnapshot } from "@sayiir/persistence-core/adapter";
import {
  atTask,
  awaiting,
  claimOrFail,
  expectCode,
  finished,
  rejection,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { LATEST_VERSION, MIGRATIONS, PostgresBackend } from "../src/index.js";
import { layoutFor, quoteIdentifier } from "../src/layout.js";
import {
  adminPool,
  closeAdminPools,
  createSubject,
  dropSchema,
  failStatements,
  loseReplies,
  serverName,
  statementCounter,
  testSchema,
} from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The lease and the wait columns of a snapshot row (lease in server epoch ms, -1: infinity). */
async function rowOf(url: string, schema: string, instanceId: string) {
  const r = await adminPool(url).query(
    `SELECT CASE WHEN claimed_until = 'infinity' THEN -1 ELSE floor(extract(epoch FROM claimed_until) * 1000) END::float8 AS lease,
            ready_task_id, wait_event, wait_task, timeout_at::float8 AS timeout_at, paused, finished, cancelled
     FROM ${quoteIdentifier(schema)}.snapshots WHERE instance_id = $1`,
    [instanceId],
  );
  return r.rows[0];
}

const offered = async (backend: PersistentBackend) =>
  (await backend.findAvailableTasks("probe", 10)).map((t) => `${t.instanceId}/${t.taskId}`);

describe.skipIf(servers.length === 0)("control and events on PostgreSQL", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("a due wait claimed by claim-next carries a lease and leaves the timer index until the claim ends", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: 1_000 }));
          const [first] = await backend.claimAvailableTasks("w1", 1, 300);
          if (first === undefined) throw new Error("the due wait was not claimed");
          expect(first).toMatchObject({ instanceId: id, taskId: "t1", timedOut: true });
          expect(await rowOf(server.url, schema, id)).toMatchObject({
            lease: first.claim.expiresAt,
            ready_task_id: null,
            wait_task: "t1",
          });
          expect(await offered(backend)).toEqual([]);
          expect(await backend.claimAvailableTasks("w2", 1, 60_000)).toEqual([]);
          // An event arriving meanwhile makes it ready, but the claim still hides it.
          const sequence = await backend.sendEvent(id, "e", text("late"));
          expect(await offered(backend)).toEqual([]);
          await sleep(450);
          // Expired: found through the leased index, now carrying the event (an event wins).
          const [second] = await backend.claimAvailableTasks("w2", 1, 60_000);
          expect(second).toMatchObject({ instanceId: id, event: { eventName: "e", sequence } });
          expect(second?.claim.token).toBeGreaterThan(first.claim.token);
          await backend.releaseTaskClaim(id, "t1", "w2");
          expect((await rowOf(server.url, schema, id))?.lease).toBeNull();
          expect(await offered(backend)).toEqual([`${id}/t1`]);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a timed-out wait keeps its timeout_at order when its lease runs out, and is gone once completed", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        try {
          await backend.saveSnapshot(awaiting("w-20", "e", "t1", { timeoutAt: 20, updatedAt: 900 }));
          await backend.saveSnapshot(atTask("r-30", "t1", { updatedAt: 30 }));
          await backend.saveSnapshot(atTask("r-10", "t1", { updatedAt: 10 }));
          const [ready] = await backend.claimAvailableTasks("w1", 1, 200);
          expect(ready?.instanceId).toBe("r-10");
          const [timer] = await backend.claimAvailableTasks("w1", 1, 200);
          expect(timer).toMatchObject({ instanceId: "w-20", timedOut: true });
          await sleep(350);
          // Both leases ran out: found in the leased index, each by its own key.
          expect(await offered(backend)).toEqual(["r-10/t1", "w-20/t1", "r-30/t1"]);
          const again = await backend.claimAvailableTasks("w2", 3, 60_000);
          const timerAgain = again.find((t) => t.instanceId === "w-20");
          if (timerAgain === undefined) throw new Error("the wait was not claimed again");
          expect(await backend.completeTasks([{ claim: timerAgain.claim, output: text("x") }])).toEqual([
            null,
          ]);
          expect(await rowOf(server.url, schema, "w-20")).toMatchObject({
            lease: null,
            ready_task_id: null,
            wait_task: null,
            timeout_at: null,
          });
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("an event is a row of its own, its sequence from the token sequence; the row says which wait is ready", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        const s = quoteIdentifier(schema);
        try {
          const id = uid();
          const wait = awaiting(id, "approval", "t2", {
            timeoutAt: 4_000_000_000_000,
            completed: { t1: text("one") },
          });
          await backend.saveSnapshot(wait);
          expect(await rowOf(server.url, schema, id)).toMatchObject({
            ready_task_id: null,
            wait_event: "approval",
            wait_task: "t2",
            timeout_at: 4_000_000_000_000,
          });
          const before = Date.now();
          const sequence = await backend.sendEvent(id, "approval", text("yes"));
          const rows = await adminPool(server.url).query(
            `SELECT instance_id, sequence::float8 AS sequence, event_name, payload, sent_at::float8 AS sent_at FROM ${s}.events`,
          );
          expect(rows.rows).toEqual([
            {
              instance_id: id,
              sequence,
              event_name: "approval",
              payload: Buffer.from("yes"),
              sent_at: expect.any(Number),
            },
          ]);
          expect(Math.abs(rows.rows[0].sent_at - before)).toBeLessThan(5_000);
          expect((await rowOf(server.url, schema, id))?.ready_task_id).toBe("t2");
          const claim = await claimOrFail(backend, id, "t2", "w1", 60_000);
          expect(claim.token).toBeGreaterThan(sequence);
          await backend.saveSnapshot(
            updatePosition(markTaskCompleted(wait, "t2", text("two")), { kind: "AtTask", taskId: "t3" }),
            { claim, consumeEvent: { eventName: "approval", sequence } },
          );
          expect(await rowOf(server.url, schema, id)).toMatchObject({
            ready_task_id: "t3",
            wait_event: null,
            wait_task: null,
            timeout_at: null,
          });
          expect((await adminPool(server.url).query(`SELECT 1 FROM ${s}.events`)).rowCount).toBe(0);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("sendEvent is one statement; a lost reply leaves the event stored, and a retry stores a second one", async () => {
        let lose = false;
        let fail = false;
        const counter = statementCounter();
        const subject = await createSubject(
          {},
          {
            faults: {
              beforeQuery: async (name) => {
                await counter.faults.beforeQuery?.(name);
                failStatements("sendEvent", () => fail).beforeQuery?.(name);
              },
              afterQuery: loseReplies("sendEvent", () => lose).afterQuery,
            },
          },
          server,
        );
        const { backend } = subject;
        try {
          const id = uid();
          await backend.saveSnapshot(awaiting(id, "e", "t1"));
          expect(await counter.count(() => backend.sendEvent(id, "e", text("one")))).toBe(1);
          // Failed before it was sent: nothing stored.
          fail = true;
          await expectCode(backend.sendEvent(id, "e", text("never")), ErrorCode.Backend);
          fail = false;
          // Sent and committed, reply lost: the caller cannot tell; the event is there.
          lose = true;
          await expectCode(backend.sendEvent(id, "e", text("two")), ErrorCode.Backend);
          lose = false;
          expect((await backend.loadPendingEvents(id)).map((e) => dec(e.payload))).toEqual(["one", "two"]);
          // Retrying the lost one appends it again: sendEvent is not idempotent (at least once).
          await backend.sendEvent(id, "e", text("two"));
          const events = await backend.loadPendingEvents(id);
          expect(events.map((e) => dec(e.payload))).toEqual(["one", "two", "two"]);
          expect(events.map((e) => e.sequence)).toEqual(
            [...events.map((e) => e.sequence)].sort((a, b) => a - b),
          );
          expect(new Set(events.map((e) => e.sequence)).size).toBe(3);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("cancel revokes the claims: rows and tokens stay, the epoch as expiry; the lease goes", async () => {
        const subject = await createSubject({}, {}, server);
        const { backend, schema } = subject;
        const s = quoteIdentifier(schema);
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const [task] = await backend.claimAvailableTasks("w1", 1, null);
          if (task === undefined) throw new Error("nothing claimed");
          const side = await claimOrFail(backend, id, "side", "w2", 60_000);
          expect((await rowOf(server.url, schema, id))?.lease).toBe(-1);
          await backend.cancelWorkflow(id);
          const claims = await adminPool(server.url).query(
            `SELECT task_id, token::float8 AS token, floor(extract(epoch FROM expires_at) * 1000)::float8 AS expires_at
             FROM ${s}.claims WHERE instance_id = $1
             UNION ALL
             SELECT claim_task, claim_token::float8, floor(extract(epoch FROM claim_expires) * 1000)::float8
             FROM ${s}.snapshots WHERE instance_id = $1 AND claim_task IS NOT NULL
             ORDER BY task_id`,
            [id],
          );
          expect(claims.rows).toEqual([
            { task_id: "side", token: side.token, expires_at: REVOKED_EXPIRY },
            { task_id: "t1", token: task.claim.token, expires_at: REVOKED_EXPIRY },
          ]);
          expect(await rowOf(server.url, schema, id)).toMatchObject({
            lease: null,
            ready_task_id: null,
            finished: true,
            cancelled: true,
          });
          await expectCode(backend.extendTaskClaim(id, "t1", "w1", 1_000), ErrorCode.ClaimLost);
          await backend.releaseTaskClaim(id, "side", "w2");
          expect(await backend.claimAvailableTasks("w3", 10, 60_000)).toEqual([]);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("a cancel is final in the statements: the upsert's guard and the heartbeat's", async () => {
        let race: (() => Promise<void>) | undefined;
        const faults = {
          beforeQuery: async (name: string) => {
            const run = race;
            if (name === "upsertSnapshot" && run !== undefined) {
              race = undefined;
              await run();
            }
          },
        };
        const subject = await createSubject({}, { faults }, server);
        const { backend } = subject;
        const other = await subject.connect();
        try {
          const model = uid();
          await backend.saveSnapshot(atTask(model, "t1"));
          await backend.cancelWorkflow(model);
          const cancelled = await backend.loadSnapshot(model);
          // The row is inserted (Cancelled) by another connection after this write's lockSnapshot
          // found none: only the conflict clause of upsertSnapshot sees it.
          const id = uid();
          race = () => other.saveSnapshot({ ...cancelled, instanceId: id });
          const late = finished(id, { kind: "Completed", finalOutput: text("late") });
          const refused = await rejection(backend.saveSnapshot(late));
          expect(refused).toMatchObject({
            code: ErrorCode.Conflict,
            message: failures.cancelledIsFinal(id).message,
          });
          expect(race).toBeUndefined();
          expect((await backend.loadSnapshot(id)).state.kind).toBe("Cancelled");

          // extendClaim refuses in the statement; readClaim then names why, in extendRefusal's order.
          const held = uid();
          await backend.saveSnapshot(atTask(held, "t1"));
          await claimOrFail(backend, held, "t1", "w1", 60_000);
          await backend.cancelWorkflow(held);
          const lateClaim = await claimOrFail(backend, held, "t2", "w2", 60_000);
          expect(await rejection(backend.extendTaskClaim(held, "t1", "w1", 1_000))).toMatchObject({
            code: ErrorCode.ClaimLost,
            message: failures.claimExpired(held, "t1").message,
          });
          expect(await rejection(backend.extendTaskClaim(held, "t2", "w2", 1_000))).toMatchObject({
            code: ErrorCode.ClaimLost,
            message: failures.claimRevoked(held, "t2").message,
          });
          await expectCode(backend.extendTaskClaim(held, "t2", "w3", 1_000), ErrorCode.ClaimLost);
          // The heartbeat renewed nothing: the late claim keeps its expiry.
          const kept = await adminPool(server.url).query(
            `SELECT floor(extract(epoch FROM expires_at) * 1000)::float8 AS expires_at
             FROM ${quoteIdentifier(subject.schema)}.claims WHERE instance_id = $1 AND task_id = 't2'`,
            [held],
          );
          expect(kept.rows[0]?.expires_at).toBe(lateClaim.expiresAt);
          await backend.releaseTaskClaim(held, "t1", "w1");
          await backend.releaseTaskClaim(held, "t2", "w2");
        } finally {
          await other.close();
          await backend.close();
          await subject.cleanup();
        }
      });

      it("racing deleteSnapshot: an event lands before the delete or is NotFound; none is left behind", async () => {
        const subject = await createSubject({}, {}, server);
        const other = await subject.connect();
        const s = quoteIdentifier(subject.schema);
        try {
          let sent = 0;
          let notFound = 0;
          for (let round = 0; round < 20; round++) {
            const ids = Array.from({ length: 10 }, () => uid());
            // At a task, not waiting: the event changes nothing in the snapshot row, which
            // sendEvent writes all the same, so that the delete sees the row moved.
            for (const id of ids) await subject.backend.saveSnapshot(atTask(id, "t1"));
            const outcomes = await Promise.all([
              ...ids.map((id) =>
                subject.backend.sendEvent(id, "e", text("x")).then(
                  () => "sent",
                  (e: { code?: string }) => e.code,
                ),
              ),
              ...ids
                .filter((_, i) => i % 2 === 0)
                .map((id) => other.deleteSnapshot(id).then(() => "deleted")),
            ]);
            sent += outcomes.filter((o) => o === "sent").length;
            notFound += outcomes.filter((o) => o === ErrorCode.NotFound).length;
            expect(outcomes.every((o) => o === "sent" || o === "deleted" || o === ErrorCode.NotFound)).toBe(
              true,
            );
          }
          expect(sent).toBeGreaterThan(0);
          const orphans = await adminPool(server.url).query<{ n: number }>(
            `SELECT count(*)::int AS n FROM ${s}.events e
             WHERE NOT EXISTS (SELECT 1 FROM ${s}.snapshots x WHERE x.instance_id = e.instance_id)`,
          );
          expect(orphans.rows[0]).toEqual({ n: 0 });
          console.log(`${serverName(server)}: ${sent} sent, ${notFound} NotFound`);
        } finally {
          await other.close();
          await subject.backend.close();
          await subject.cleanup();
        }
      }, 60_000);

      it("a version-2 store migrates to version 3 with its leases, claims, ready tasks and finished workflows intact", async () => {
        const schema = testSchema();
        const l = layoutFor(schema);
        const admin = adminPool(server.url);
        let backend: PostgresBackend | undefined;
        try {
          await admin.query(`CREATE SCHEMA ${l.s}`);
          await admin.query(
            `CREATE TABLE ${l.migrations} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
          );
          for (const m of MIGRATIONS.filter((m) => m.version <= 2)) {
            await admin.query(m.sql(l));
            await admin.query(`INSERT INTO ${l.migrations} (version, name) VALUES ($1, $2)`, [
              m.version,
              m.name,
            ]);
          }
          const insert = async (snapshot: Parameters<typeof toStoredSnapshot>[0], lease: string | null) => {
            const st = toStoredSnapshot(snapshot);
            await admin.query(
              `INSERT INTO ${l.snapshots} (instance_id, definition_hash, header, initial_input, finished, last_completed_task_id, ready_task_id, updated_at, claimed_until)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ${lease ?? "NULL"})`,
              [
                st.instanceId,
                st.definitionHash,
                Buffer.from(st.header),
                st.initialInput,
                st.finished,
                st.lastCompletedTaskId,
                st.readyTaskId,
                st.updatedAt,
              ],
            );
          };
          await insert(atTask("v2-ready", "t1", { updatedAt: 10, initialInput: text("in") }), null);
          await insert(atTask("v2-leased", "t1", { updatedAt: 20 }), "now() + interval '1 hour'");
          await insert(atTask("v2-lapsed", "t1", { updatedAt: 30 }), "now() - interval '1 minute'");
          await insert(finished("v2-done", { kind: "Failed", error: "boom" }), null);
          await admin.query(
            `INSERT INTO ${l.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at) VALUES
               ('v2-leased', 't1', 'old', nextval(${l.tokenSequence}), now(), now() + interval '1 hour'),
               ('v2-lapsed', 't1', 'old', nextval(${l.tokenSequence}), now() - interval '2 hours', now() - interval '1 minute')`,
          );
          backend = new PostgresBackend({ connectionString: server.url, schema });
          expect(await backend.migrate()).toEqual({ applied: [3, 4, 5, 6, 7], version: LATEST_VERSION });
          expect(await rowOf(server.url, schema, "v2-done")).toMatchObject({
            finished: true,
            paused: false,
            cancelled: false,
          });
          expect(await offered(backend)).toEqual(["v2-ready/t1", "v2-lapsed/t1"]);
          const got = await backend.claimAvailableTasks("new", 10, 60_000);
          expect(got.map((t) => [t.instanceId, dec(t.input)])).toEqual([
            ["v2-ready", "in"],
            ["v2-lapsed", ""],
          ]);
          await backend.releaseTaskClaim("v2-leased", "t1", "old");
          expect((await backend.claimAvailableTasks("new", 10, 60_000)).map((t) => t.instanceId)).toEqual([
            "v2-leased",
          ]);
          await expectCode(backend.sendEvent("v2-done", "e", text("x")), ErrorCode.Conflict);
          await expectCode(backend.cancelWorkflow("v2-done"), ErrorCode.Conflict);
          await backend.pauseWorkflow("v2-ready");
          expect((await backend.extendTaskClaim("v2-ready", "t1", "new", 60_000)).workflowPaused).toBe(true);
        } finally {
          await backend?.close();
          await dropSchema(server.url, schema);
        }
      });
    });
  }
});
