import { randomBytes } from "node:crypto";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { eventually, inProgress, queued, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { PostgresBackend } from "../src/index.js";
import { layoutFor, quoteIdentifier, WAKE_CHANNEL_PREFIX, wakeChannelFor } from "../src/layout.js";
import { WAKE_APPLICATION_SUFFIX } from "../src/wake-ups.js";
import {
  adminPool,
  closeAdminPools,
  createSubject,
  type PostgresServer,
  serverName,
  servers,
} from "./subject.js";

afterAll(closeAdminPools);

/**
 * A plain connection LISTENing on a schema's channel (payloads: '+queue' when a task of it is
 * claimable at once, '~queue' when its due time moved or the writer cannot tell). `drain()` sends a marker on the channel
 * from another session and returns what came before it: notifications are delivered in commit
 * order, so every write that committed before the marker has been heard (or sent nothing).
 */
async function rawListener(url: string, channel: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const heard: string[] = [];
  client.on("notification", (m) => {
    if (m.channel === channel) heard.push(m.payload ?? "");
  });
  await client.query(`LISTEN ${quoteIdentifier(channel)}`);
  return {
    async drain(): Promise<string[]> {
      const marker = `marker-${randomBytes(6).toString("hex")}`;
      await adminPool(url).query("SELECT pg_notify($1, $2)", [channel, marker]);
      await eventually("the marker", async () => (heard.includes(marker) ? true : undefined));
      const before = heard.splice(0, heard.indexOf(marker) + 1);
      before.pop();
      return before;
    },
    close: () => client.end(),
  };
}

/** The backend pid of the connection whose application_name is `name` (undefined: none). */
async function pidOf(db: pg.Client | pg.Pool, name: string): Promise<number | undefined> {
  const r = await db.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [
    name,
  ]);
  return r.rows[0]?.pid;
}

/** `url` with another database. */
function onDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** A claim-next claim on the one ready task of `queue`. */
async function claimOne(backend: PersistentBackend, queue: string, ttlMs: number | null = 60_000) {
  const [task] = await backend.claimAvailableTasks("w", 1, ttlMs, { queues: [queue] });
  if (task === undefined) throw new Error(`nothing to claim in ${queue}`);
  return task;
}

describe("wake-up channel", () => {
  it("one per schema, at most 63 bytes: the schema's name when it fits, else a hash of it", () => {
    expect(wakeChannelFor("sayiir")).toBe("sayiir_wake_sayiir");
    const long = "s".repeat(60);
    const channel = wakeChannelFor(long);
    expect(channel.startsWith(WAKE_CHANNEL_PREFIX)).toBe(true);
    expect(Buffer.byteLength(channel)).toBeLessThanOrEqual(63);
    expect(channel).not.toBe(wakeChannelFor(`${"s".repeat(59)}t`));
    expect(Buffer.byteLength(wakeChannelFor("é".repeat(25)))).toBeLessThanOrEqual(63);
  });
});

/** What each write path sends on the channel: `act` runs after `setup`, and only its notifications count. */
interface PathCase {
  name: string;
  setup: (backend: PersistentBackend, q: string, id: string) => Promise<unknown>;
  act: (backend: PersistentBackend, q: string, id: string, prepared: never) => Promise<unknown>;
  /** The queues notified (an empty list: none). */
  expected: (q: string) => string[];
}

const ready = (b: PersistentBackend, q: string, id: string) => b.saveSnapshot(queued(id, q));
const waiting = (b: PersistentBackend, q: string, id: string) =>
  b.saveSnapshot(
    inProgress(id, {
      position: { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t2", timeoutAt: null, queue: q },
    }),
  );
const claimed = async (b: PersistentBackend, q: string, id: string) => {
  await ready(b, q, id);
  return claimOne(b, q);
};

const PATHS: PathCase[] = [
  { name: "saveSnapshot of a ready task", setup: async () => {}, act: ready, expected: (q) => [`+${q}`] },
  {
    name: "saveSnapshot of a task with a future runAt (its due time)",
    setup: async () => {},
    act: (b, q, id) => b.saveSnapshot(queued(id, q, Date.now() + 3_600_000)),
    expected: (q) => [`~${q}`],
  },
  {
    name: "completeTasks with next (a step) notifies the next task's queue",
    setup: claimed,
    act: (b, q, _id, task: Awaited<ReturnType<typeof claimOne>>) =>
      b.completeTasks([
        {
          claim: task.claim,
          output: text("one"),
          next: { kind: "AtTask", taskId: "t2", queue: `${q}-next` },
        },
      ]),
    expected: (q) => [`+${q}-next`],
  },
  {
    name: "releaseTaskClaim of a claim-next claim",
    setup: claimed,
    act: (b, _q, id) => b.releaseTaskClaim(id, "t1", "w"),
    expected: (q) => [`~${q}`],
  },
  {
    name: "releaseTaskClaim of a claimTask claim (claims table, no lease)",
    setup: async (b, q, id) => {
      await ready(b, q, id);
      return b.claimTask(id, "t1", "w", 60_000);
    },
    act: (b, _q, id) => b.releaseTaskClaim(id, "t1", "w"),
    expected: (q) => [`~${q}`],
  },
  {
    name: "resumeWorkflow",
    setup: async (b, q, id) => {
      await ready(b, q, id);
      await b.pauseWorkflow(id);
    },
    act: (b, _q, id) => b.resumeWorkflow(id),
    expected: (q) => [`+${q}`],
  },
  {
    name: "sendEvent that makes a wait ready",
    setup: waiting,
    act: (b, _q, id) => b.sendEvent(id, "go", text("payload")),
    expected: (q) => [`+${q}`],
  },
  {
    name: "failTasks with a retryAt (its due time)",
    setup: claimed,
    act: (b, _q, _id, task: Awaited<ReturnType<typeof claimOne>>) =>
      b.failTasks([{ claim: task.claim, error: "boom", retryAt: Date.now() + 3_600_000 }]),
    expected: (q) => [`~${q}`],
  },
  // Writes that make nothing ready send nothing (NOTIFY serialises commits: never on claims).
  { name: "claimAvailableTasks: none", setup: ready, act: (b, q) => claimOne(b, q), expected: () => [] },
  {
    name: "claimTask, extendTaskClaim: none",
    setup: ready,
    act: async (b, _q, id) => {
      await b.claimTask(id, "t1", "w", 60_000);
      await b.extendTaskClaim(id, "t1", "w", 120_000);
    },
    expected: () => [],
  },
  {
    name: "completeTasks without next, saveTaskResult: none",
    setup: claimed,
    act: async (b, _q, id, task: Awaited<ReturnType<typeof claimOne>>) => {
      await b.completeTasks([{ claim: task.claim, output: text("one") }]);
      await b.saveTaskResult(id, "t9", text("other"));
    },
    expected: () => [],
  },
  {
    name: "failTasks without a retry (held), pauseWorkflow, cancelWorkflow: none",
    setup: claimed,
    act: async (b, _q, id, task: Awaited<ReturnType<typeof claimOne>>) => {
      await b.failTasks([{ claim: task.claim, error: "boom", retryAt: null }]);
      await b.pauseWorkflow(id);
      await b.cancelWorkflow(id);
    },
    expected: () => [],
  },
  {
    name: "sendEvent to a workflow that does not wait for it: none",
    setup: waiting,
    act: (b, _q, id) => b.sendEvent(id, "other", text("payload")),
    expected: () => [],
  },
];

describe.skipIf(servers.length === 0)("wake-ups: what notifies", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      for (const path of PATHS) {
        it(path.name, async () => {
          const subject = await createSubject({}, {}, server);
          const listener = await rawListener(server.url, layoutFor(subject.schema).wakeChannel);
          try {
            const { backend } = subject;
            const q = uid("q");
            const id = uid();
            const prepared = await path.setup(backend, q, id);
            await listener.drain();
            await path.act(backend, q, id, prepared as never);
            expect(await listener.drain()).toEqual(path.expected(q));
          } finally {
            await listener.close();
            await subject.backend.close();
            await subject.cleanup();
          }
        });
      }

      it("a rolled-back write sends nothing: a refused save of a finished workflow", async () => {
        const subject = await createSubject({}, {}, server);
        const listener = await rawListener(server.url, layoutFor(subject.schema).wakeChannel);
        try {
          const { backend } = subject;
          const q = uid("q");
          const id = uid();
          const task = await claimed(backend, q, id);
          await backend.completeTasks([
            {
              claim: task.claim,
              output: text("done"),
              next: { kind: "Completed", finalOutput: text("done") },
            },
          ]);
          await listener.drain();
          await expect(backend.saveSnapshot(queued(id, q))).rejects.toThrow();
          expect(await listener.drain()).toEqual([]);
        } finally {
          await listener.close();
          await subject.backend.close();
          await subject.cleanup();
        }
      });
    });
  }
});

/**
 * A database of its own for the listener tests: they shut new connections out of it
 * (ALLOW_CONNECTIONS false) to hold the listener off while a write is made, which must not
 * touch the databases the other test files use.
 */
async function ownDatabase(server: PostgresServer) {
  const name = `sayiir_wake_${randomBytes(6).toString("hex")}`;
  const admin = adminPool(server.url);
  await admin.query(`CREATE DATABASE ${name}`);
  const url = onDatabase(server.url, name);
  const control = new pg.Client({ connectionString: url });
  await control.connect();
  return {
    url,
    control,
    /** Refuses (false) or allows new connections to this database (from another one). */
    allow: (allowed: boolean) => admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS ${allowed}`),
    async drop() {
      await control.end().catch(() => {});
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`).catch(() => {});
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
    },
  };
}

describe.skipIf(servers.length === 0)("wake-ups: the listener connection", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("survives pg_terminate_backend: a write made while it was cut wakes the waiter on reconnect, a write after it wakes it at once; close() ends it", async () => {
        const db = await ownDatabase(server);
        const app = `wake-test-${randomBytes(4).toString("hex")}`;
        const listenerName = `${app}${WAKE_APPLICATION_SUFFIX}`;
        const open = () =>
          new PostgresBackend({
            poolConfig: { connectionString: db.url, application_name: app, max: 3 },
            schema: "wake",
          });
        const backend = open();
        const writer = open();
        try {
          await backend.migrate();
          const q = uid("q");
          const startedAt = Date.now();
          const first = backend.waitForTasks({ queues: [q], timeoutMs: 60_000 });
          const pid = await eventually("the listener", () => pidOf(db.control, listenerName));
          // The writer's pooled connection is open: it can write while no new connection can.
          await writer.loadPendingEvents(uid()).catch(() => {});
          await db.allow(false);
          await db.control.query("SELECT pg_terminate_backend($1)", [pid]);
          await eventually("the listener gone", async () =>
            (await pidOf(db.control, listenerName)) === undefined ? true : undefined,
          );
          await writer.saveSnapshot(queued(uid(), q));
          await db.allow(true);
          // notify(null) after the reconnect, then a look: well before the 10 s bound.
          expect(await first).toBe("notified");
          expect(Date.now() - startedAt).toBeLessThan(backend.capabilities.wakeBoundMs - 2_000);
          const second = await eventually("a new listener", async () => {
            const now = await pidOf(db.control, listenerName);
            return now !== undefined && now !== pid ? now : undefined;
          });

          // Cut again, and write at once: whether the write lands before or after the
          // reconnect, the waiter wakes within a few seconds.
          const q2 = uid("q");
          const again = backend.waitForTasks({ queues: [q2], timeoutMs: 60_000 });
          await sleep(150); // the wait's first look is done
          await db.control.query("SELECT pg_terminate_backend($1)", [second]);
          const cutAt = Date.now();
          await writer.saveSnapshot(queued(uid(), q2));
          expect(await again).toBe("notified");
          expect(Date.now() - cutAt).toBeLessThan(5_000);

          // And after that, a plain write wakes a waiter as before.
          const q3 = uid("q");
          const third = backend.waitForTasks({ queues: [q3], timeoutMs: 60_000 });
          await sleep(150);
          const writtenAt = Date.now();
          await writer.saveSnapshot(queued(uid(), q3));
          expect(await third).toBe("notified");
          expect(Date.now() - writtenAt).toBeLessThan(1_500);

          await backend.close();
          await eventually("no listener after close()", async () =>
            (await pidOf(db.control, listenerName)) === undefined ? true : undefined,
          );
          await writer.close();
          // A server process leaves pg_stat_activity a moment after its client ends.
          await eventually("no connection of either backend left", async () => {
            const left = await db.control.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1",
              [`${app}%`],
            );
            return left.rows[0]?.n === 0 ? true : undefined;
          });
        } finally {
          await backend.close();
          await writer.close();
          await db.drop();
        }
      });

      it("a backend over the caller's pool listens on a connection of its own (the pool's options) and leaves the pool open", async () => {
        const subject = await createSubject({}, {}, server);
        const app = `wake-pool-${randomBytes(4).toString("hex")}`;
        const pool = new pg.Pool({ connectionString: server.url, application_name: app, max: 2 });
        const backend = new PostgresBackend({ pool, schema: subject.schema });
        try {
          const q = uid("q");
          const waited = backend.waitForTasks({ queues: [q], timeoutMs: 60_000 });
          await eventually("the listener", () =>
            pidOf(adminPool(server.url), `${app}${WAKE_APPLICATION_SUFFIX}`),
          );
          await sleep(150);
          const writtenAt = Date.now();
          await subject.backend.saveSnapshot(queued(uid(), q));
          expect(await waited).toBe("notified");
          expect(Date.now() - writtenAt).toBeLessThan(1_500);
          await backend.close();
          await eventually("no listener after close()", async () =>
            (await pidOf(adminPool(server.url), `${app}${WAKE_APPLICATION_SUFFIX}`)) === undefined
              ? true
              : undefined,
          );
          expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows[0]?.one).toBe(1);
        } finally {
          await backend.close();
          await pool.end();
          await subject.backend.close();
          await subject.cleanup();
        }
      });
    });
  }
});
