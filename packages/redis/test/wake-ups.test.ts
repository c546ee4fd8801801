import type { NextStep, PersistentBackend } from "@sayiir/persistence-core";
import {
  atTask,
  eventually,
  inProgress,
  queued,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { Cluster, Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { wakeConnectionName } from "../src/backend.js";
import { RedisBackend } from "../src/index.js";
import {
  adminClient,
  createSubject,
  dropPrefix,
  type RedisSubject,
  type Target,
  targets,
} from "./subject.js";

/*
 * The wake-up listener against real servers: what the scripts publish (watched by raw
 * subscribers, on every master of a cluster: PUBLISH from a script reaches them all), the
 * subscriber connection cut and reconnected, a user's own client left out of subscriber mode,
 * close(), and the probe's read-only look. The semantics of waits are the conformance group's.
 */

/** Long enough that only a missed wake-up reaches it. */
const LONG_WAIT_MS = 20_000;
/** A push wake-up comes within this long, load included. */
const PUSH_BOUND_MS = 1_500;
/** A wait started this long ago has made its first look. */
const SETTLE_MS = 150;

const admins: Array<Redis | Cluster> = [];
const subjects: RedisSubject[] = [];
const opened: Array<Redis | Cluster | PersistentBackend> = [];

afterAll(async () => {
  await Promise.allSettled(opened.map((c) => ("waitForTasks" in c ? c.close() : c.quit())));
  await Promise.allSettled(subjects.map((s) => s.backend.close()));
  await Promise.allSettled(subjects.map((s) => s.cleanup()));
  await Promise.allSettled(admins.map((a) => a.quit()));
});

async function subjectOn(target: Target): Promise<RedisSubject> {
  const subject = await createSubject(
    {},
    target.kind === "standalone" ? { url: target.url } : { cluster: { nodes: target.nodes } },
  );
  subjects.push(subject);
  return subject;
}

async function adminOn(target: Target): Promise<Redis | Cluster> {
  const admin = adminClient(target);
  admins.push(admin);
  if (admin instanceof Cluster) await admin.ping();
  return admin;
}

/** The server(s) to look at: the standalone server, or every master of the cluster. */
const mastersOf = (admin: Redis | Cluster): Redis[] =>
  admin instanceof Cluster ? admin.nodes("master") : [admin];

/** The client ids of a backend's subscriber connections, by its connection name, on every master. */
async function subscribers(
  admin: Redis | Cluster,
  keyPrefix: string,
): Promise<Array<{ node: Redis; id: string }>> {
  const name = wakeConnectionName(keyPrefix);
  const found: Array<{ node: Redis; id: string }> = [];
  for (const node of mastersOf(admin)) {
    const list = (await node.client("LIST")) as string;
    for (const line of list.split("\n")) {
      if (!line.includes(` name=${name} `)) continue;
      const id = /^id=(\d+) /.exec(line)?.[1];
      if (id !== undefined) found.push({ node, id });
    }
  }
  return found;
}

/** The one subscriber connection of a backend (waits until there is exactly one). */
const theSubscriber = (admin: Redis | Cluster, keyPrefix: string, not?: string) =>
  eventually(`the subscriber connection of ${keyPrefix}`, async () => {
    const found = await subscribers(admin, keyPrefix);
    return found.length === 1 && found[0]?.id !== not ? found[0] : undefined;
  });

/** Raw subscribers of a channel on every master: the queues each one received, in order. */
async function watch(admin: Redis | Cluster, channel: string): Promise<string[][]> {
  const received: string[][] = [];
  for (const node of mastersOf(admin)) {
    const raw = node.duplicate({ lazyConnect: false });
    raw.on("error", () => {});
    opened.push(raw);
    const got: string[] = [];
    received.push(got);
    raw.on("message", (from: string, message: string) => {
      if (from === channel) got.push(message);
    });
    await raw.subscribe(channel);
  }
  return received;
}

/** How many times each master's subscriber received `queue` ('+queue': ready now, '~queue': due). */
const counts = (received: string[][], queue: string): number[] =>
  received.map((got) => got.filter((m) => m.slice(1) === queue).length);

/** The kinds ('+' ready now, '~' due later) of the messages of `queue` the first master received. */
const kindsOf = (received: string[][], queue: string): string[] =>
  (received[0] ?? []).filter((m) => m.slice(1) === queue).map((m) => m[0] ?? "");

/** Waits until every master's subscriber holds `n` messages of `queue` (one more fails at once). */
async function expectPublished(received: string[][], queue: string, n: number, what: string): Promise<void> {
  await eventually(`${what}: ${n} message(s) of ${queue} on every master`, async () => {
    const seen = counts(received, queue);
    expect({ what, over: seen.some((count) => count > n) }).toEqual({ what, over: false });
    return seen.every((count) => count === n) ? true : undefined;
  });
}

/** A marker published by hand and seen by every subscriber: every earlier message has arrived. */
async function flush(admin: Redis | Cluster, channel: string, received: string[][]): Promise<void> {
  const marker = uid("marker");
  await mastersOf(admin)[0]?.publish(channel, `+${marker}`);
  await expectPublished(received, marker, 1, "the marker");
}

const kinds = [targets.standalone, targets.cluster].filter((t): t is Target => t !== null);

describe.each(kinds.map((target) => ({ target, kind: target.kind })))("wake-ups on $kind", ({ target }) => {
  it("every write that files a task into a ready or timer set publishes its queue, once per call; claims publish nothing", async () => {
    const subject = await subjectOn(target);
    const backend = subject.backend;
    const admin = await adminOn(target);
    const received = await watch(admin, backend.layout.wakeChannel());
    const q = {
      save: uid("save"),
      later: uid("later"),
      step: uid("step"),
      release: uid("release"),
      resume: uid("resume"),
      event: uid("event"),
      retry: uid("retry"),
      batch: uid("batch"),
    };
    // A save of a ready task, and of a task due later (its timer set).
    await backend.saveSnapshot(queued(uid(), q.save));
    await expectPublished(received, q.save, 1, "save");
    await backend.saveSnapshot(queued(uid(), q.later, Date.now() + 60_000));
    await expectPublished(received, q.later, 1, "save with a future runAt");
    // A step: the next task's queue. The claims on the way publish nothing.
    const stepped = uid();
    await backend.saveSnapshot(atTask(stepped, "t1"));
    const claim = await backend.claimTask(stepped, "t1", "w", 60_000);
    if (claim === null) throw new Error("no claim");
    const next: NextStep = { kind: "AtTask", taskId: "t2", queue: q.step };
    expect(await backend.completeTasks([{ claim, output: text("one"), next }])).toEqual([null]);
    await expectPublished(received, q.step, 1, "step");
    // Release: the save, then the release (claim-next in between publishes nothing).
    const released = uid();
    await backend.saveSnapshot(queued(released, q.release));
    expect(await backend.claimAvailableTasks("w", 1, 60_000, { queues: [q.release] })).toHaveLength(1);
    await backend.releaseTaskClaim(released, "t1", "w");
    await expectPublished(received, q.release, 2, "save + release");
    // Resume: the save, then the resume (the pause publishes nothing).
    const paused = uid();
    await backend.saveSnapshot(queued(paused, q.resume));
    await backend.pauseWorkflow(paused);
    await backend.resumeWorkflow(paused);
    await expectPublished(received, q.resume, 2, "save + resume");
    // An event: a wait without a timeout is in no index, its event makes it ready.
    const waiting = uid();
    await backend.saveSnapshot(
      inProgress(waiting, {
        position: {
          kind: "AwaitingEvent",
          eventName: "go",
          nextTaskId: "t2",
          timeoutAt: null,
          queue: q.event,
        },
      }),
    );
    await backend.sendEvent(waiting, "go", text("payload"));
    await expectPublished(received, q.event, 1, "sendEvent");
    // A failed attempt with a retry time: the task moves to the timer set.
    await backend.saveSnapshot(queued(uid(), q.retry));
    const [failing] = await backend.claimAvailableTasks("w", 1, 60_000, { queues: [q.retry] });
    if (failing === undefined) throw new Error("nothing claimed");
    expect(
      await backend.failTasks([{ claim: failing.claim, error: "boom", retryAt: Date.now() + 60_000 }]),
    ).toEqual([null]);
    await expectPublished(received, q.retry, 2, "save + failTasks with retryAt");
    // A batch: three steps into one queue in one completeTasks call, one message per script
    // call (one call on a standalone server; on a cluster one per shard touched).
    const batch = [uid(), uid(), uid()];
    for (const id of batch) await backend.saveSnapshot(atTask(id, "t1"));
    const claims = await backend.claimAvailableTasks("w", 3, 60_000, { queues: ["default"] });
    expect(claims.map((c) => c.instanceId).sort()).toEqual([...batch].sort());
    const batchNext: NextStep = { kind: "AtTask", taskId: "t2", queue: q.batch };
    expect(
      await backend.completeTasks(
        claims.map((c) => ({ claim: c.claim, output: text("x"), next: batchNext })),
      ),
    ).toEqual([null, null, null]);
    // Each master's subscriber hears the batch at least once. Waited for, not taken from the flush:
    // on a cluster, messages published on different nodes reach a subscriber in no set order, so
    // the marker (published on one master) can overtake a batch message from another (seen in CI).
    await eventually(`the batch's message of ${q.batch} on every master`, async () =>
      counts(received, q.batch).every((count) => count >= 1) ? true : undefined,
    );
    await flush(admin, backend.layout.wakeChannel(), received);
    const shardsTouched = new Set(batch.map((id) => backend.layout.shardOf(id))).size;
    for (const count of counts(received, q.batch)) {
      expect(count).toBeGreaterThanOrEqual(1);
      expect(count).toBeLessThanOrEqual(target.kind === "standalone" ? 1 : shardsTouched);
    }
    // Nothing more came (the claims, the pause, the flush above): exact counts on every master.
    for (const [queue, n] of [
      [q.save, 1],
      [q.later, 1],
      [q.step, 1],
      [q.release, 2],
      [q.resume, 2],
      [q.event, 1],
      [q.retry, 2],
    ] as const) {
      expect({ queue, counts: counts(received, queue) }).toEqual({ queue, counts: received.map(() => n) });
    }
    // Ready now ('+': waiters claim without a look first) or only due later ('~': they look).
    expect(kindsOf(received, q.save)).toEqual(["+"]);
    expect(kindsOf(received, q.later)).toEqual(["~"]);
    expect(kindsOf(received, q.step)).toEqual(["+"]);
    expect(kindsOf(received, q.release)).toEqual(["+", "+"]);
    expect(kindsOf(received, q.resume)).toEqual(["+", "+"]);
    expect(kindsOf(received, q.event)).toEqual(["+"]);
    expect(kindsOf(received, q.retry)).toEqual(["+", "~"]);
  });

  it("the subscriber connection cut: a write after the cut still wakes a waiter, and a write made while it was cut wakes it on reconnect", async () => {
    const { backend, connect, keyPrefix } = await subjectOn(target);
    const other = await connect();
    opened.push(other);
    const admin = await adminOn(target);
    // The first wait starts the listener (a 0 ms wait only looks once: it starts none).
    expect(await backend.waitForTasks({ queues: [uid("q")], timeoutMs: 100 })).toBe("timeout");
    const first = await theSubscriber(admin, keyPrefix);
    await first.node.client("KILL", "ID", first.id);
    const second = await theSubscriber(admin, keyPrefix, first.id);

    // After the cut: the new connection is subscribed.
    const after = uid("after");
    const waiter = backend.waitForTasks({ queues: [after], timeoutMs: LONG_WAIT_MS });
    await sleep(SETTLE_MS);
    let wroteAt = Date.now();
    await other.saveSnapshot(queued(uid(), after));
    expect(await waiter).toBe("notified");
    expect(Date.now() - wroteAt).toBeLessThan(PUSH_BOUND_MS);

    // While cut: the write lands before the connection is back (checked: no subscriber yet), so
    // its message is lost; the reconnection itself makes the waiter look. A machine that
    // reconnected before the write tries again (that write woke it the ordinary way).
    let current = second;
    for (let attempt = 1; ; attempt++) {
      const during = uid("during");
      const waiting = backend.waitForTasks({ queues: [during], timeoutMs: LONG_WAIT_MS });
      await sleep(SETTLE_MS);
      await current.node.client("KILL", "ID", current.id);
      wroteAt = Date.now();
      await other.saveSnapshot(queued(uid(), during));
      const cut = (await subscribers(admin, keyPrefix)).length === 0;
      expect(await waiting).toBe("notified");
      expect(Date.now() - wroteAt).toBeLessThan(PUSH_BOUND_MS);
      current = await theSubscriber(admin, keyPrefix, current.id);
      if (cut) break;
      expect(attempt).toBeLessThan(5);
    }
  });

  it("a user's own client is never put in subscriber mode; close() quits the subscriber and leaves the user's client open", async () => {
    const admin = await adminOn(target);
    const user =
      target.kind === "standalone"
        ? new Redis(target.url)
        : new Cluster(target.nodes, { lazyConnect: false });
    user.on("error", () => {});
    opened.push(user);
    const keyPrefix = `t-${uid()}`;
    const backend = new RedisBackend({ client: user, keyPrefix });
    const other = new RedisBackend(
      target.kind === "standalone"
        ? { url: target.url, keyPrefix }
        : { cluster: { nodes: target.nodes }, keyPrefix },
    );
    opened.push(other);
    const q = uid("q");
    const waiter = backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS });
    await sleep(SETTLE_MS);
    await other.saveSnapshot(queued(uid(), q));
    expect(await waiter).toBe("notified");
    const subscriber = await theSubscriber(admin, keyPrefix);
    // The user's connections: normal mode, no subscription, ordinary commands work.
    const userNodes = user instanceof Cluster ? user.nodes() : [user];
    for (const node of userNodes) {
      expect(node.mode).toBe("normal");
      if (node.status !== "ready") continue;
      const id = String(await node.client("ID"));
      const line = ((await node.client("LIST", "ID", id)) as string).trim();
      expect(line).toMatch(/ sub=0 psub=0 /);
      expect(line).not.toContain(wakeConnectionName(keyPrefix));
    }
    await user.set(`{${keyPrefix}:0}:user-key`, "still a normal client");
    expect(await subscriber.node.pubsub("NUMSUB", backend.layout.wakeChannel())).toEqual([
      backend.layout.wakeChannel(),
      1,
    ]);

    await backend.close();
    expect(await subscribers(admin, keyPrefix)).toEqual([]);
    for (const node of mastersOf(admin)) {
      expect(await node.pubsub("NUMSUB", backend.layout.wakeChannel())).toEqual([
        backend.layout.wakeChannel(),
        0,
      ]);
    }
    expect(await user.get(`{${keyPrefix}:0}:user-key`)).toBe("still a normal client");
    await other.close();
    await dropPrefix(admin, keyPrefix);
  });

  it("the probe only looks: a due timer ends the wait ('due') and stays in its timer set for claim-next to move", async () => {
    const { backend, connect } = await subjectOn(target);
    const other = await connect();
    opened.push(other);
    const admin = await adminOn(target);
    const q = uid("q");
    const id = uid();
    const runAt = Date.now() + 400;
    await other.saveSnapshot(queued(id, q, runAt));
    // The save's own message (it moved the due time) may wake a wait first: wait on till due.
    let reason = await backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS });
    while (reason === "notified" && Date.now() < runAt) {
      reason = await backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS });
    }
    expect(["due", "ready"]).toContain(reason);
    expect(Date.now()).toBeGreaterThanOrEqual(runAt - 50);
    const shard = backend.layout.shardOf(id);
    const node = admin;
    expect(await node.zscore(backend.layout.timers(shard, q), id)).toBe(String(runAt));
    expect(await node.zscore(backend.layout.queueReady(shard, q), id)).toBeNull();
    // Still due when asked again, and claim-next takes it (moving it then).
    expect(await backend.waitForTasks({ queues: [q], timeoutMs: 0 })).toBe("ready");
    const [task] = await backend.claimAvailableTasks("w", 1, 60_000, { queues: [q] });
    expect(task?.instanceId).toBe(id);
    expect(await node.zscore(backend.layout.timers(shard, q), id)).toBeNull();
  });
  it("more expired leases of other queues than one look reads do not hide an expired lease of the waited queue", async () => {
    const { backend } = await subjectOn(target);
    const [a, b] = [uid("a"), uid("b")];
    // Crashed workers everywhere: 20 leases of queue b (nobody serves it), then one of queue a.
    for (let i = 0; i < 20; i++) await backend.saveSnapshot(queued(uid(), b));
    expect(await backend.claimAvailableTasks("crashed", 20, 300, { queues: [b] })).toHaveLength(20);
    await backend.saveSnapshot(queued(uid(), a));
    expect(await backend.claimAvailableTasks("crashed", 1, 300, { queues: [a] })).toHaveLength(1);
    await sleep(400);
    const started = Date.now();
    expect(await backend.waitForTasks({ queues: [a], timeoutMs: 3_000 })).toBe("ready");
    expect(Date.now() - started).toBeLessThan(PUSH_BOUND_MS);
    expect(await backend.claimAvailableTasks("w", 1, 60_000, { queues: [a] })).toHaveLength(1);
  });
});

describe.skipIf(targets.standalone === null)(
  "wake-ups for a user without channel rights (standalone)",
  () => {
    it("a user whose ACL allows the keys but no channel still writes, and its waits poll", async () => {
      const target = targets.standalone as Extract<Target, { kind: "standalone" }>;
      const admin = (await adminOn(target)) as Redis;
      const user = uid("nochan");
      // Redis 7's default for a new user is resetchannels: no PUBLISH, no SUBSCRIBE.
      await admin.call("ACL", "SETUSER", user, "on", ">secret-pw", "~*", "+@all", "resetchannels");
      try {
        const url = new URL(target.url);
        url.username = user;
        url.password = "secret-pw";
        const { backend } = await createSubject({}, { url: url.toString() });
        opened.push(backend);
        const q = uid("q");
        const id = uid();
        // The save's PUBLISH is refused: the save succeeds all the same (the wake-up is a hint).
        await backend.saveSnapshot(queued(id, q));
        expect((await backend.loadSnapshot(id)).state.kind).toBe("InProgress");
        const [task] = await backend.claimAvailableTasks("w", 1, 60_000, { queues: [q] });
        expect(task?.instanceId).toBe(id);
        // Its waits cannot subscribe: they poll, and a task saved meanwhile is found.
        const waiting = backend.waitForTasks({ queues: [q], timeoutMs: LONG_WAIT_MS });
        await sleep(SETTLE_MS);
        await backend.saveSnapshot(queued(uid(), q));
        expect(await waiting).toBe("ready");
      } finally {
        await admin.call("ACL", "DELUSER", user);
      }
    });
  },
);
