import type { Socket } from "node:net";
import { bytesEqual, ErrorCode, type NextStep, type TaskClaim } from "@sayiir/persistence-core";
import {
  atTask,
  awaiting,
  claimOrFail,
  expectCode,
  patternBytes,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { PostgresBackend } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";
import type { FaultHooks } from "../src/options.js";
import { adminPool, closeAdminPools, createSubject, type PostgresSubject, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const dec = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
const toT3: NextStep = { kind: "AtTask", taskId: "t3" };

/**
 * A row trigger on task_results logging every row written (INSERT, UPDATE, DELETE) with its
 * instance and task; `writes(id)` lists them in order, `reset()` clears the log.
 */
async function logResultWrites(subject: PostgresSubject) {
  const s = quoteIdentifier(subject.schema);
  const admin = adminPool(subject.server.url);
  await admin.query(`
    CREATE TABLE ${s}.result_writes (n bigserial PRIMARY KEY, op text, instance_id text, task_id text);
    CREATE FUNCTION ${s}.log_result_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        INSERT INTO ${s}.result_writes (op, instance_id, task_id) VALUES (TG_OP, OLD.instance_id, OLD.task_id);
      ELSE
        INSERT INTO ${s}.result_writes (op, instance_id, task_id) VALUES (TG_OP, NEW.instance_id, NEW.task_id);
      END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER log_result_write AFTER INSERT OR UPDATE OR DELETE ON ${s}.task_results
      FOR EACH ROW EXECUTE FUNCTION ${s}.log_result_write()`);
  return {
    writes: async (id: string) =>
      (
        await admin.query<{ op: string; task_id: string }>(
          `SELECT op, task_id FROM ${s}.result_writes WHERE instance_id = $1 ORDER BY n`,
          [id],
        )
      ).rows.map((r) => `${r.op} ${r.task_id}`),
    reset: async () => {
      await admin.query(`DELETE FROM ${s}.result_writes`);
    },
  };
}

/** The row version (xmin) of each stored result of `id`, by task. */
async function resultVersions(subject: PostgresSubject, id: string): Promise<Record<string, string>> {
  const rows = await adminPool(subject.server.url).query<{ task_id: string; v: string }>(
    `SELECT task_id, xmin::text AS v FROM ${quoteIdentifier(subject.schema)}.task_results WHERE instance_id = $1`,
    [id],
  );
  return Object.fromEntries(rows.rows.map((r) => [r.task_id, r.v]));
}

/** The snapshot row's version (xmin), or undefined when it is missing. */
async function rowVersion(subject: PostgresSubject, id: string): Promise<string | undefined> {
  const rows = await adminPool(subject.server.url).query<{ v: string }>(
    `SELECT xmin::text AS v FROM ${quoteIdentifier(subject.schema)}.snapshots WHERE instance_id = $1`,
    [id],
  );
  return rows.rows[0]?.v;
}

/**
 * FaultHooks that record the statements sent, and run `race` (once, awaited) just before the
 * next stepWrite is sent: between a step's read and its write.
 */
function interleaving() {
  let race: (() => Promise<void>) | undefined;
  const sent: string[] = [];
  const faults: FaultHooks = {
    beforeQuery: async (name) => {
      sent.push(name);
      if (name === "stepWrite" && race !== undefined) {
        const run = race;
        race = undefined;
        await run();
      }
    },
  };
  return {
    faults,
    sent,
    beforeNextWrite(body: () => Promise<void>) {
      race = body;
      sent.length = 0;
    },
  };
}

describe.skipIf(servers.length === 0)("completeTasks with next on PostgreSQL", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      /** A subject with `faults`, a second backend on its schema (no hooks), and cleanup. */
      async function open(faults?: FaultHooks) {
        const subject = await createSubject({}, faults === undefined ? {} : { faults }, server);
        const other = new PostgresBackend({ connectionString: server.url, schema: subject.schema });
        return {
          subject,
          backend: subject.backend,
          other,
          close: async () => {
            await subject.backend.close();
            await other.close();
            await subject.cleanup();
          },
        };
      }

      it("a step neither reads nor rewrites another output: one result row inserted, the others' row versions kept, no output sent back", async () => {
        // A pool of one connection of our own, so the bytes on its socket are the step's.
        const pool = new pg.Pool({ connectionString: server.url, max: 1 });
        const sockets: Socket[] = [];
        pool.on("connect", (client) => {
          sockets.push((client as unknown as { connection: { stream: Socket } }).connection.stream);
        });
        const subject = await createSubject({}, {}, server);
        const backend = new PostgresBackend({ pool, schema: subject.schema });
        try {
          const log = await logResultWrites(subject);
          const id = uid("big");
          const big = patternBytes(2 * 1024 * 1024, 7);
          await backend.saveSnapshot(
            atTask(id, "t3", {
              completed: { t1: big, t2: text("two") },
              last: "t2",
              initialInput: text("in"),
            }),
          );
          const claim = await claimOrFail(backend, id, "t3", "w1", 60_000);
          const before = await resultVersions(subject, id);
          await log.reset();
          const bytes = () => sockets.reduce((n, s) => n + s.bytesRead + s.bytesWritten, 0);
          const start = bytes();
          expect(
            await backend.completeTasks([
              { claim, output: text("three"), next: { kind: "AtTask", taskId: "t4" } },
            ]),
          ).toEqual([null]);
          // Two statements each way: no output of 2 MiB went either way.
          expect(bytes() - start).toBeLessThan(16 * 1024);
          expect(await log.writes(id)).toEqual(["INSERT t3"]);
          const after = await resultVersions(subject, id);
          expect(after.t1).toBe(before.t1);
          expect(after.t2).toBe(before.t2);
          const loaded = await backend.loadSnapshot(id);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(bytesEqual(loaded.state.completedTasks.t1?.output ?? new Uint8Array(), big)).toBe(true);
          expect(dec(loaded.state.completedTasks.t3?.output)).toBe("three");
          expect(loaded.state.position).toEqual({ kind: "AtTask", taskId: "t4" });

          // A terminal step drops every result (and the pending events), as a terminal saveSnapshot.
          await backend.sendEvent(id, "late", text("x"));
          const last = await claimOrFail(backend, id, "t4", "w1", 60_000);
          await log.reset();
          expect(
            await backend.completeTasks([
              { claim: last, output: text("four"), next: { kind: "Completed", finalOutput: text("end") } },
            ]),
          ).toEqual([null]);
          expect((await log.writes(id)).sort()).toEqual(["DELETE t1", "DELETE t2", "DELETE t3"]);
          expect(await backend.loadPendingEvents(id)).toEqual([]);
          expect((await backend.loadSnapshot(id)).state).toEqual({
            kind: "Completed",
            finalOutput: text("end"),
          });
        } finally {
          await backend.close();
          await subject.backend.close();
          await subject.cleanup();
          await pool.end();
        }
      });

      it("saveSnapshot writes only new or changed results and deletes only removed ones", async () => {
        const subject = await createSubject({}, {}, server);
        const backend = subject.backend;
        try {
          const log = await logResultWrites(subject);
          const id = uid("save");
          const big = patternBytes(1024 * 1024, 3);
          await backend.saveSnapshot(
            atTask(id, "t4", { completed: { t1: big, t2: text("two"), t3: text("three") }, last: "t3" }),
          );
          const before = await resultVersions(subject, id);
          await log.reset();
          await backend.saveSnapshot(
            atTask(id, "t5", {
              completed: { t1: big, t2: text("TWO"), t4: text("four") },
              last: "t4",
            }),
          );
          expect((await log.writes(id)).sort()).toEqual(["DELETE t3", "INSERT t4", "UPDATE t2"]);
          expect((await resultVersions(subject, id)).t1).toBe(before.t1);
          const loaded = await backend.loadSnapshot(id);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(["t1", "t2", "t4"]);
          expect(dec(loaded.state.completedTasks.t2?.output)).toBe("TWO");
          // The same snapshot again writes no result at all.
          await log.reset();
          await backend.saveSnapshot(loaded);
          expect(await log.writes(id)).toEqual([]);
          // A terminal one removes them all.
          await backend.saveSnapshot({ ...loaded, state: { kind: "Failed", error: "x" } });
          expect((await log.writes(id)).sort()).toEqual(["DELETE t1", "DELETE t2", "DELETE t4"]);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("round trips: two statements per batch of steps (one when every item is refused on read), runs in input order", async () => {
        const race = interleaving();
        const { backend, close } = await open(race.faults);
        try {
          const p = uid("rt");
          const ids = Array.from({ length: 6 }, (_, i) => `${p}-${i}`);
          for (const id of ids)
            await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t2", "w1", 60_000)));
          race.sent.length = 0;
          expect(
            await backend.completeTasks(
              claims.slice(0, 5).map((claim) => ({ claim, output: text("2"), next: toT3 })),
            ),
          ).toEqual([null, null, null, null, null]);
          expect(race.sent).toEqual(["stepRead", "stepWrite"]);
          // One item.
          race.sent.length = 0;
          expect(
            await backend.completeTasks([{ claim: claims[5] as TaskClaim, output: text("2"), next: toT3 }]),
          ).toEqual([null]);
          expect(race.sent).toEqual(["stepRead", "stepWrite"]);
          // Every item refused on read (their claims are gone): the read only.
          race.sent.length = 0;
          const outcomes = await backend.completeTasks(
            claims.map((claim) => ({ claim, output: text("2"), next: toT3 })),
          );
          expect(outcomes.map((o) => o?.code)).toEqual(claims.map(() => ErrorCode.ClaimLost));
          expect(race.sent).toEqual(["stepRead"]);
          // A mixed batch: a plain completion, two steps, a plain one: three runs in order; two
          // steps of one instance: the second one in a run of its own, after the first one's write.
          const [a, b] = ids as [string, string];
          const plainA = await claimOrFail(backend, a, "side", "w1", 60_000);
          const stepA = await claimOrFail(backend, a, "t3", "w1", 60_000);
          const stepB = await claimOrFail(backend, b, "t3", "w1", 60_000);
          const sideB = await claimOrFail(backend, b, "side", "w1", 60_000);
          race.sent.length = 0;
          expect(
            await backend.completeTasks([
              { claim: plainA, output: text("s") },
              { claim: stepA, output: text("3"), next: { kind: "AtTask", taskId: "t4" } },
              { claim: stepB, output: text("3"), next: { kind: "AtTask", taskId: "t4" } },
              { claim: sideB, output: text("s") },
            ]),
          ).toEqual([null, null, null, null]);
          expect(race.sent).toEqual(["completeTasks", "stepRead", "stepWrite", "completeTasks"]);
          const t4 = await claimOrFail(backend, a, "t4", "w1", 60_000);
          const t5 = await claimOrFail(backend, a, "t5", "w1", 60_000);
          race.sent.length = 0;
          expect(
            await backend.completeTasks([
              { claim: t4, output: text("4"), next: { kind: "AtTask", taskId: "t5" } },
              { claim: t5, output: text("5"), next: { kind: "Completed", finalOutput: text("done") } },
            ]),
          ).toEqual([null, null]);
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead", "stepWrite"]);
          expect((await backend.loadSnapshot(a)).state.kind).toBe("Completed");
        } finally {
          await close();
        }
      });

      it("a step that consumes the last event of its name into a wait for that name again: the wait is not ready", async () => {
        const { backend, close } = await open();
        try {
          const id = uid("again");
          await backend.saveSnapshot(awaiting(id, "go", "t2", { completed: { t1: text("1") } }));
          const sequence = await backend.sendEvent(id, "go", text("first"));
          const [claimed] = await backend.claimAvailableTasks("w1", 1, 60_000);
          expect(claimed?.event).toEqual({ eventName: "go", sequence });
          if (claimed?.event === undefined) throw new Error("no event");
          const wait: NextStep = {
            kind: "AwaitingEvent",
            eventName: "go",
            nextTaskId: "t3",
            timeoutAt: null,
          };
          expect(
            await backend.completeTasks([
              { claim: claimed.claim, output: text("2"), next: wait, consumeEvent: claimed.event },
            ]),
          ).toEqual([null]);
          expect(await backend.loadPendingEvents(id)).toEqual([]);
          expect(await backend.findAvailableTasks("w1", 10)).toEqual([]);
          const next = await backend.sendEvent(id, "go", text("second"));
          const [task] = await backend.findAvailableTasks("w1", 10);
          expect(task).toMatchObject({ taskId: "t3", event: { eventName: "go", sequence: next } });
        } finally {
          await close();
        }
      });

      it("step vs cancel between read and write: read again, ClaimLost (the cancel revoked the claim), nothing written", async () => {
        const race = interleaving();
        const { subject, backend, other, close } = await open(race.faults);
        try {
          const id = uid("cancel");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const claim = await claimOrFail(backend, id, "t2", "w1", 60_000);
          let version: string | undefined;
          race.beforeNextWrite(async () => {
            await other.cancelWorkflow(id, { reason: "stop" });
            version = await rowVersion(subject, id);
          });
          const [outcome] = await backend.completeTasks([{ claim, output: text("2"), next: toT3 }]);
          expect(outcome?.code).toBe(ErrorCode.ClaimLost);
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead"]);
          expect(await rowVersion(subject, id)).toBe(version);
          expect((await backend.loadSnapshot(id)).state.kind).toBe("Cancelled");
          expect(Object.keys(await resultVersions(subject, id))).toEqual(["t1"]);
        } finally {
          await close();
        }
      });

      it("step vs pause between read and write: Conflict, nothing written, the claim kept; after resume it steps", async () => {
        const race = interleaving();
        const { subject, backend, other, close } = await open(race.faults);
        try {
          const id = uid("pause");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const claim = await claimOrFail(backend, id, "t2", "w1", 60_000);
          let version: string | undefined;
          race.beforeNextWrite(async () => {
            await other.pauseWorkflow(id);
            version = await rowVersion(subject, id);
          });
          const [outcome] = await backend.completeTasks([{ claim, output: text("2"), next: toT3 }]);
          expect(outcome?.code).toBe(ErrorCode.Conflict);
          expect(outcome?.message).toMatch(/paused/);
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead"]);
          expect(await rowVersion(subject, id)).toBe(version);
          expect(Object.keys(await resultVersions(subject, id))).toEqual(["t1"]);
          expect(await other.claimTask(id, "t2", "w2", 60_000)).toBeNull();
          await other.resumeWorkflow(id);
          expect(await backend.completeTasks([{ claim, output: text("2"), next: toT3 }])).toEqual([null]);
          const [task] = await other.findAvailableTasks("w2", 10);
          expect([task?.taskId, dec(task?.input)]).toEqual(["t3", "2"]);
        } finally {
          await close();
        }
      });

      it("step vs sendEvent between read and write: read again and written, the wait ready with that event", async () => {
        const race = interleaving();
        const { backend, other, close } = await open(race.faults);
        try {
          const id = uid("event");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const claim = await claimOrFail(backend, id, "t2", "w1", 60_000);
          let sequence = 0;
          race.beforeNextWrite(async () => {
            sequence = await other.sendEvent(id, "go", text("payload"));
          });
          const wait: NextStep = {
            kind: "AwaitingEvent",
            eventName: "go",
            nextTaskId: "t3",
            timeoutAt: null,
          };
          expect(await backend.completeTasks([{ claim, output: text("2"), next: wait }])).toEqual([null]);
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead", "stepWrite"]);
          const [task] = await other.findAvailableTasks("w2", 10);
          expect(task).toMatchObject({ taskId: "t3", event: { eventName: "go", sequence } });
          expect(dec(task?.input)).toBe("payload");
        } finally {
          await close();
        }
      });

      it("step vs claim-next takeover after expiry: the stale step is ClaimLost and writes nothing; the new holder steps", async () => {
        const race = interleaving();
        const { subject, backend, other, close } = await open(race.faults);
        try {
          const id = uid("takeover");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const [mine] = await backend.claimAvailableTasks("w1", 1, 300);
          if (mine === undefined) throw new Error("nothing claimed");
          let taken: TaskClaim | undefined;
          let version: string | undefined;
          race.beforeNextWrite(async () => {
            await sleep(450);
            const [t] = await other.claimAvailableTasks("w2", 1, 60_000);
            expect(t).toMatchObject({ instanceId: id, taskId: "t2", attempt: 2 });
            taken = t?.claim;
            version = await rowVersion(subject, id);
          });
          const [outcome] = await backend.completeTasks([
            { claim: mine.claim, output: text("stale"), next: toT3 },
          ]);
          expect(outcome?.code).toBe(ErrorCode.ClaimLost);
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead"]);
          expect(await rowVersion(subject, id)).toBe(version);
          expect(Object.keys(await resultVersions(subject, id))).toEqual(["t1"]);
          if (taken === undefined) throw new Error("no takeover");
          expect(await other.completeTasks([{ claim: taken, output: text("fresh"), next: toT3 }])).toEqual([
            null,
          ]);
          const loaded = await other.loadSnapshot(id);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(dec(loaded.state.completedTasks.t2?.output)).toBe("fresh");
        } finally {
          await close();
        }
      });

      it("a claim expiring between read and write (the row unchanged): ClaimLost at the write, nothing written", async () => {
        const race = interleaving();
        const { subject, backend, close } = await open(race.faults);
        try {
          const id = uid("expiry");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const mine = await claimOrFail(backend, id, "t2", "w1", 300);
          const version = await rowVersion(subject, id);
          race.beforeNextWrite(async () => {
            await sleep(450);
          });
          const [outcome] = await backend.completeTasks([{ claim: mine, output: text("stale"), next: toT3 }]);
          expect(outcome?.code).toBe(ErrorCode.ClaimLost);
          expect(race.sent).toEqual(["stepRead", "stepWrite"]);
          expect(await rowVersion(subject, id)).toBe(version);
          expect(Object.keys(await resultVersions(subject, id))).toEqual(["t1"]);
        } finally {
          await close();
        }
      });

      it("a claimTask takeover between read and write (it writes the row): read again, ClaimLost, nothing written", async () => {
        const race = interleaving();
        const { subject, backend, other, close } = await open(race.faults);
        try {
          const id = uid("claimtask");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const mine = await claimOrFail(backend, id, "t2", "w1", 300);
          race.beforeNextWrite(async () => {
            await sleep(450);
            expect(await other.claimTask(id, "t2", "w2", 60_000)).not.toBeNull();
          });
          const [outcome] = await backend.completeTasks([{ claim: mine, output: text("stale"), next: toT3 }]);
          expect(outcome?.code).toBe(ErrorCode.ClaimLost);
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead"]);
          expect(Object.keys(await resultVersions(subject, id))).toEqual(["t1"]);
          await expectCode(backend.releaseTaskClaim(id, "t2", "w1"), ErrorCode.ClaimLost);
        } finally {
          await close();
        }
      });

      it("a write committed while the step's write waits for the row lock is seen (its new version): read again, then written", async () => {
        const race = interleaving();
        const { subject, backend, close } = await open(race.faults);
        try {
          const id = uid("locked");
          await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("1") } }));
          const claim = await claimOrFail(backend, id, "t2", "w1", 60_000);
          let committed: Promise<void> = Promise.resolve();
          race.beforeNextWrite(async () => {
            const client = await adminPool(server.url).connect();
            await client.query("BEGIN");
            await client.query(
              `UPDATE ${quoteIdentifier(subject.schema)}.snapshots SET updated_at = updated_at WHERE instance_id = $1`,
              [id],
            );
            committed = (async () => {
              await sleep(300);
              await client.query("COMMIT");
              client.release();
            })();
          });
          expect(await backend.completeTasks([{ claim, output: text("2"), next: toT3 }])).toEqual([null]);
          await committed;
          expect(race.sent).toEqual(["stepRead", "stepWrite", "stepRead", "stepWrite"]);
          const state = (await backend.loadSnapshot(id)).state;
          expect(state.kind === "InProgress" ? state.position : state).toEqual(toT3);
        } finally {
          await close();
        }
      });

      it("several clients step different workflows at once, with events sent meanwhile: each task moves its workflow exactly once", async () => {
        // Counts the step rounds read (stepRead) against the calls that ran steps: the difference
        // is the rounds read again after losing a race.
        let reads = 0;
        let calls = 0;
        const faults: FaultHooks = {
          beforeQuery: (name) => {
            if (name === "stepRead") reads++;
          },
        };
        const { backend, close } = await open(faults);
        const connect = () =>
          new PostgresBackend({ connectionString: server.url, schema: backend.schema, faults });
        const [other, third] = [connect(), connect()];
        try {
          const p = uid("many");
          const ids = Array.from({ length: 24 }, (_, i) => `${p}-${String(i).padStart(2, "0")}`);
          for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
          const stepped: string[] = [];
          const errors: unknown[] = [];
          let running = true;
          const wait: NextStep = {
            kind: "AwaitingEvent",
            eventName: "go",
            nextTaskId: "t2",
            timeoutAt: null,
          };
          const worker = async (client: PostgresBackend, name: string) => {
            const deadline = Date.now() + 30_000;
            while (stepped.length < ids.length * 2 && Date.now() < deadline) {
              const claimed = await client.claimAvailableTasks(name, 4, 30_000);
              if (claimed.length === 0) {
                await sleep(5);
                continue;
              }
              calls++;
              const outcomes = await client.completeTasks(
                claimed.map((t) =>
                  t.taskId === "t1"
                    ? { claim: t.claim, output: text("one"), next: wait }
                    : {
                        claim: t.claim,
                        output: text(`two ${dec(t.input)}`),
                        next: { kind: "Completed", finalOutput: t.input },
                        ...(t.event === undefined ? {} : { consumeEvent: t.event }),
                      },
                ),
              );
              for (const [i, o] of outcomes.entries()) {
                if (o === null) stepped.push(`${claimed[i]?.instanceId}/${claimed[i]?.taskId}`);
                else errors.push(o);
              }
            }
          };
          // Events meanwhile: one "go" per workflow, and "noise" that only rewrites the rows.
          const sender = async () => {
            for (const id of ids) {
              await third.sendEvent(id, "go", text(`go ${id}`));
              // The workflow may be Completed already (ConflictError): noise only.
              await third.sendEvent(id, "noise", text("n")).catch(() => {});
            }
            while (running) {
              for (const id of ids.slice(0, 6)) await third.sendEvent(id, "noise", text("n")).catch(() => {});
              await sleep(2);
            }
          };
          const sending = sender();
          try {
            await Promise.all([worker(backend, "w0"), worker(other, "w1"), worker(third, "w2")]);
          } finally {
            running = false;
            await sending;
          }
          console.log(
            `[${serverName(server)}] ${calls} calls with steps, ${reads - calls} rounds read again`,
          );
          expect(errors).toEqual([]);
          expect(stepped.sort()).toEqual(ids.flatMap((id) => [`${id}/t1`, `${id}/t2`]).sort());
          for (const id of ids) {
            const loaded = await backend.loadSnapshot(id);
            expect(loaded.state).toEqual({ kind: "Completed", finalOutput: text(`go ${id}`) });
            expect(await backend.loadPendingEvents(id)).toEqual([]);
          }
        } finally {
          await Promise.all([other.close(), third.close()]);
          await close();
        }
      });
    });
  }
});
