// Claim-next must never hand one task to two callers while the first claim's lease lives. The
// benchmark's wake-ups pattern without the benchmark: several backends (each its own MongoClient,
// as separate processes would be), each with several workers looping claim-next(1) with a long
// lease then completeTasks (or waitForTasks when nothing was claimable), while a producer saves one
// ready task at a time. Every claim is recorded with its token; a task claimed twice fails.
import type { ClaimedTask } from "@sayiir/persistence-core";
import { atTask, text, uid } from "@sayiir/persistence-core/conformance";
import { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { MongoBackend } from "../src/index.js";
import {
  createSubject,
  DATABASE,
  dropPrefix,
  type FaultSeam,
  faultSeam,
  freshPrefix,
  server,
} from "./subject.js";

const BACKENDS = Number(process.env.RACE_BACKENDS ?? 3);
const WORKERS = Number(process.env.RACE_WORKERS ?? 6);
const ROUNDS = Number(process.env.RACE_ROUNDS ?? 5);
const TASKS = Number(process.env.RACE_TASKS ?? 120);
const GAP_MS = Number(process.env.RACE_GAP_MS ?? 3);
const TTL_MS = 300_000;
const TOKEN_CLAIMS = Number(process.env.RACE_TOKEN_CLAIMS ?? 60);

interface Claimed {
  workerId: string;
  token: number;
}

async function round(url: string, r: number): Promise<{ twice: string[]; refused: string[] }> {
  const prefix = freshPrefix();
  const clients = Array.from({ length: BACKENDS }, () => new MongoClient(url));
  const backends = clients.map(
    (client) => new MongoBackend({ client, database: DATABASE, collectionPrefix: prefix }),
  );
  const stop = new AbortController();
  const claims = new Map<string, Claimed[]>();
  const refused: string[] = [];
  const worker = async (backend: MongoBackend, workerId: string) => {
    while (!stop.signal.aborted) {
      const tasks: ClaimedTask[] = await backend.claimAvailableTasks(workerId, 1, TTL_MS);
      if (tasks.length === 0) {
        await backend.waitForTasks({ timeoutMs: 5_000, signal: stop.signal }).catch(() => undefined);
        continue;
      }
      for (const { instanceId, claim } of tasks) {
        const list = claims.get(instanceId) ?? [];
        list.push({ workerId, token: claim.token });
        claims.set(instanceId, list);
      }
      const outcomes = await backend.completeTasks(tasks.map(({ claim }) => ({ claim, output: text("x") })));
      for (const [i, outcome] of outcomes.entries()) {
        if (outcome !== null)
          refused.push(`${workerId} ${JSON.stringify(tasks[i]?.claim)}: ${String(outcome)}`);
      }
    }
  };
  try {
    await (backends[0] as MongoBackend).migrate();
    // The clocks and the listeners are warm before the first task (the first call probes the server).
    await Promise.all(backends.map((b) => b.findAvailableTasks("warm-up", 1)));
    const runs = backends.flatMap((backend, b) =>
      Array.from({ length: WORKERS }, (_, k) => worker(backend, `r${r}-b${b}-w${k}`)),
    );
    const producer = backends[0] as MongoBackend;
    for (let i = 0; i < TASKS; i++) {
      await new Promise((resolve) => setTimeout(resolve, Math.random() * GAP_MS));
      const id = uid(`race${String(i).padStart(4, "0")}`);
      await producer.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
    }
    const deadline = Date.now() + 30_000;
    while (claims.size < TASKS && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    stop.abort();
    await Promise.all(runs);
    expect(claims.size).toBe(TASKS);
    const twice = [...claims.entries()]
      .filter(([, list]) => list.length > 1)
      .map(([id, list]) => `${id}: ${list.map((c) => `${c.workerId}#${c.token}`).join(", ")}`);
    return { twice, refused };
  } finally {
    stop.abort();
    await Promise.all(backends.map((b) => b.close().catch(() => undefined)));
    const admin = new MongoClient(url);
    try {
      await dropPrefix(admin, prefix);
    } finally {
      await admin.close();
      await Promise.all(clients.map((c) => c.close()));
    }
  }
}

describe.skipIf(server === null)("claim-next: one task, one live claim", () => {
  it("fencing tokens: 4 clients x 8 concurrent claimTask loops never get the same token", async () => {
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const clients = Array.from({ length: 4 }, () => new MongoClient(url));
    const backends = clients.map(
      (client) => new MongoBackend({ client, database: DATABASE, collectionPrefix: prefix }),
    );
    try {
      await (backends[0] as MongoBackend).migrate();
      const tokens: number[] = [];
      await Promise.all(
        backends.flatMap((backend, b) =>
          Array.from({ length: 8 }, async (_, k) => {
            for (let i = 0; i < TOKEN_CLAIMS; i++) {
              const claim = await backend.claimTask(uid(`tok-${b}-${k}-${i}`), "t1", `w${b}-${k}`, TTL_MS);
              if (claim !== null) tokens.push(claim.token);
            }
          }),
        ),
      );
      expect(tokens.length).toBe(4 * 8 * TOKEN_CLAIMS);
      const repeated = tokens.filter((token, i) => tokens.indexOf(token) !== i);
      expect(repeated).toEqual([]);
    } finally {
      await Promise.all(backends.map((b) => b.close().catch(() => undefined)));
      const admin = new MongoClient(url);
      try {
        await dropPrefix(admin, prefix);
      } finally {
        await admin.close();
        await Promise.all(clients.map((c) => c.close()));
      }
    }
  });

  it(`${BACKENDS} clients x ${WORKERS} workers claim-next(1), a producer saving one task at a time, ${ROUNDS} x ${TASKS} tasks: never claimed twice`, async () => {
    const url = server?.url ?? "";
    const twice: string[] = [];
    const refused: string[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const got = await round(url, r);
      twice.push(...got.twice);
      refused.push(...got.refused);
      if (got.twice.length > 0 || got.refused.length > 0)
        console.log(
          `round ${r}: ${got.twice.length} twice, ${got.refused.length} refused\n${[...got.twice, ...got.refused].join("\n")}`,
        );
    }
    expect(twice).toEqual([]);
    expect(refused).toEqual([]);
  }, 600_000);
});

// The two windows the checks above close, made deterministic with the fault seam: backend `late`
// sends its compare-and-set after backend `first` claimed the same task.
describe.skipIf(server === null)("claim-next: a lost compare-and-set never becomes a claim", () => {
  /**
   * One ready task; `arm` sets the seam of backend `late` and may run `claimFirst` (backend
   * `first` claims the task) inside it. Then `late` claims, and `first` completes what it got.
   */
  async function race(
    arm: (
      seam: FaultSeam,
      names: { snapshots: string; meta: string },
      claimFirst: () => Promise<void>,
    ) => void,
  ): Promise<{ first: ClaimedTask[]; late: ClaimedTask[]; completed: unknown[] }> {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    const first = await subject.connect();
    try {
      const id = uid("one");
      await first.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
      let won: ClaimedTask[] = [];
      arm(seam, { snapshots: `${subject.prefix}snapshots`, meta: `${subject.prefix}meta` }, async () => {
        won = await first.claimAvailableTasks("first", 1, TTL_MS);
      });
      const late = await subject.backend.claimAvailableTasks("late", 1, TTL_MS);
      seam.hook = null;
      // The first claim is still the live one: its completion is accepted.
      const completed = await first.completeTasks(won.map(({ claim }) => ({ claim, output: text("done") })));
      return { first: won, late, completed };
    } finally {
      seam.hook = null;
      await first.close();
      await subject.backend.close();
      await subject.cleanup?.();
    }
  }

  it("a read-back showing another call's claim with the same token (a duplicated counter reply) is lost, not won", async () => {
    const got = await race((seam, names, claimFirst) => {
      let bumped = false;
      let fired = false;
      seam.hook = (call, proceed) => {
        if (call.collection === names.meta && call.method === "findOneAndUpdate" && !bumped) {
          bumped = true;
          // The reply the stand-in could give: the value after the NEXT caller's increment.
          return (async () => {
            const doc = (await proceed()) as { n: number };
            return { ...doc, n: doc.n + 1 };
          })();
        }
        if (call.collection === names.snapshots && call.method === "bulkWrite" && !fired) {
          fired = true;
          return claimFirst().then(() => proceed());
        }
        return proceed();
      };
    });
    expect(got.first).toHaveLength(1);
    expect(got.late).toEqual([]);
    expect(got.completed).toEqual([null]);
  });

  it("a compare-and-set against a torn read (the new version, the old claims) does not replace the live claim", async () => {
    const got = await race((seam, names, claimFirst) => {
      let fired = false;
      seam.hook = (call, proceed) => {
        if (call.collection !== names.snapshots || call.method !== "bulkWrite" || fired) return proceed();
        fired = true;
        return (async () => {
          await claimFirst();
          // The version as it is now, as a read torn by that claim would show it beside no claim.
          const [ops, options] = call.args as [Array<{ updateOne: { filter: { _id: string } } }>, unknown];
          const current = await new MongoClient(server?.url ?? "").connect().then(async (client) => {
            try {
              const filter = ops[0]?.updateOne.filter as { _id: string };
              return await client
                .db(DATABASE)
                .collection<{ _id: string; v: string }>(names.snapshots)
                .findOne({ _id: filter._id });
            } finally {
              await client.close();
            }
          });
          const torn = ops.map((op) => ({
            updateOne: { ...op.updateOne, filter: { ...op.updateOne.filter, v: current?.v } },
          }));
          return proceed([torn, options]);
        })();
      };
    });
    expect(got.first).toHaveLength(1);
    expect(got.late).toEqual([]);
    expect(got.completed).toEqual([null]);
  });
});
