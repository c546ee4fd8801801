import { createHash } from "node:crypto";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { BackendError, ErrorCode } from "@sayiir/persistence-core";
import { atTask, awaiting, eventually, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { RedisBackend } from "../src/index.js";
import { type FaultHooks, SCRIPTS } from "../src/scripts/index.js";
import { adminClient, connection, dropPrefix, targets as servers, type Target } from "./subject.js";

/*
 * Lost replies and partial failures of claim calls.
 *
 * A lost reply: a small TCP proxy between the backend and the shared server (one per node of the
 * cluster, through ioredis's natMap) forwards everything, except that once armed with a script it
 * lets that script's next call through, throws away what comes back and closes the client's
 * connection: the script ran, the client never heard. ioredis then either fails the command (the
 * backend's own clients: autoResendUnfulfilledCommands false, and retryDelayOnFailover 0 on a
 * Cluster) or sends it again after reconnecting (a user's client with ioredis's defaults), and the
 * claim scripts must answer that second run with the claims the first run made (per-call request
 * id), not with null or a fresh batch.
 */

/**
 * What identifies a script's call on the wire: its SHA (EVALSHA) or its body (ioredis sends EVAL
 * with the body the first time on each connection).
 */
const markers = (lua: string) => [createHash("sha1").update(lua).digest("hex"), lua];
const CLAIM_TASK = markers(SCRIPTS.claimTask.lua);
const CLAIM_SHARD = markers(SCRIPTS.claimNext.lua);
const DELETE = markers(SCRIPTS.deleteSnapshot.lua);
const COMPLETE = markers(SCRIPTS.completeTasks.lua);
const SEND_EVENT = markers(SCRIPTS.sendEvent.lua);

/** How many bytes a proxy keeps to find a marker split across reads (longer than any script body). */
const RECENT_BYTES = 64 * 1024;

/**
 * Whether `marker` occurs in `seen` with at least its last byte in the newest `chunkLength` bytes:
 * a command sent before the proxy was armed, already wholly seen, never matches.
 */
function endsInChunk(seen: Buffer, chunkLength: number, marker: string): boolean {
  const length = Buffer.byteLength(marker);
  const from = Math.max(0, seen.length - chunkLength - length + 1);
  return seen.indexOf(marker, from) !== -1;
}

/** Arming shared by the proxies of one test (one per cluster node): the first to see the marker drops. */
interface Arming {
  markers: string[] | null;
  /** Replies thrown away so far. */
  dropped: number;
}

class ReplyDropper {
  #server: Server;
  #sockets = new Set<Socket>();
  port = 0;

  constructor(
    readonly target: { host: string; port: number },
    readonly arming: Arming = { markers: null, dropped: 0 },
  ) {
    this.#server = createServer((client) => this.#accept(client));
    this.#server.on("error", () => {});
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", () => resolve()));
    const address = this.#server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
  }

  /** The next command whose bytes hold one of `markers` runs, but its reply is dropped and the connection closed. */
  arm(markers: string[]): void {
    this.arming.markers = markers;
  }

  get dropped(): number {
    return this.arming.dropped;
  }

  #accept(client: Socket): void {
    const upstream = tcpConnect(this.target.port, this.target.host);
    this.#sockets.add(client);
    this.#sockets.add(upstream);
    let dropping = false;
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      this.#sockets.delete(client);
      this.#sockets.delete(upstream);
    };
    client.on("error", closeBoth);
    upstream.on("error", closeBoth);
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    // The bytes seen last on this connection: a command can arrive split over two reads (a loaded
    // host, a full socket buffer), so a marker is looked for across the boundary too.
    let recent = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      upstream.write(chunk);
      const seen = Buffer.concat([recent, chunk]);
      recent = seen.subarray(Math.max(0, seen.length - RECENT_BYTES));
      if (this.arming.markers?.some((marker) => endsInChunk(seen, chunk.length, marker))) {
        // From now on nothing comes back on this connection, and it closes once the server has
        // surely run the command (a reply already under way for an earlier command is lost too).
        this.arming.markers = null;
        this.arming.dropped++;
        dropping = true;
        setTimeout(closeBoth, 300);
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!dropping) client.write(chunk);
    });
  }

  async stop(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

const standalone = inject("redis");

describe.skipIf(standalone === null)("a claim whose reply was lost (standalone, through a proxy)", () => {
  let dropper: ReplyDropper;
  let proxyUrl: string;
  let directUrl: string;
  let admin: Redis;
  const prefixes: string[] = [];

  beforeAll(async () => {
    directUrl = standalone!.url;
    const url = new URL(directUrl);
    dropper = new ReplyDropper({ host: url.hostname, port: Number(url.port || 6379) });
    await dropper.start();
    url.hostname = "127.0.0.1";
    url.port = String(dropper.port);
    proxyUrl = url.toString();
    admin = new Redis(directUrl);
  });
  afterAll(async () => {
    for (const prefix of prefixes) await dropPrefix(admin, prefix);
    await admin.quit();
    await dropper.stop();
  });

  const prefix = (name: string) => {
    const p = uid(name);
    prefixes.push(p);
    return p;
  };

  it("the backend's own client does not send it again: BackendError (unknown outcome), not null or NOT_FOUND", async () => {
    const keyPrefix = prefix("lost-own");
    const backend = new RedisBackend({ url: proxyUrl, keyPrefix, operationTimeoutMs: 1000 });
    const direct = new RedisBackend({ url: directUrl, keyPrefix });
    try {
      expect(
        (backend.client.options as { autoResendUnfulfilledCommands?: boolean }).autoResendUnfulfilledCommands,
      ).toBe(false);
      const [warm, id] = [uid(), uid()];
      await backend.saveSnapshot(atTask(warm, "t1"));
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await backend.claimTask(warm, "t1", "w", null)).not.toBeNull(); // loads the script
      dropper.arm(CLAIM_TASK);
      const before = dropper.dropped;
      const started = Date.now();
      const error = await rejection(backend.claimTask(id, "t1", "w", null));
      expect(dropper.dropped).toBe(before + 1);
      expect(error).toBeInstanceOf(BackendError);
      expect(error).toMatchObject({ code: ErrorCode.Backend });
      expect(Date.now() - started).toBeLessThan(1000 + 1500);
      // The claim did land (the outcome was unknown, not "no claim"): it is w's.
      expect(await direct.claimTask(id, "t1", "other", null)).toBeNull();
      await direct.releaseTaskClaim(id, "t1", "w");
      // The backend carries on over a new connection.
      expect(await backend.claimTask(id, "t1", "w", null)).not.toBeNull();
      // A delete whose reply was lost: BackendError, not NOT_FOUND for a delete that succeeded.
      expect(await backend.deleteSnapshot(warm)).toBeUndefined(); // loads the script on this connection
      await backend.saveSnapshot(atTask(warm, "t1"));
      dropper.arm(DELETE);
      const deleted = await rejection(backend.deleteSnapshot(warm));
      expect(dropper.dropped).toBe(before + 2);
      expect(deleted).toBeInstanceOf(BackendError);
      expect(deleted).toMatchObject({ code: ErrorCode.Backend });
      expect(await rejection(direct.loadSnapshot(warm))).toMatchObject({ code: ErrorCode.NotFound });
    } finally {
      await backend.close();
      await direct.close();
    }
  }, 20_000);

  it("a client that re-sends it gets the claim its first run made (claimTask)", async () => {
    const keyPrefix = prefix("lost-resend");
    // ioredis's defaults: autoResendUnfulfilledCommands true.
    const client = new Redis(proxyUrl);
    client.on("error", () => {});
    const backend = new RedisBackend({ client, keyPrefix, operationTimeoutMs: 5000 });
    const direct = new RedisBackend({ url: directUrl, keyPrefix });
    try {
      const [warm, id] = [uid(), uid()];
      await backend.saveSnapshot(atTask(warm, "t1"));
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.claimTask(warm, "t1", "w", null);
      dropper.arm(CLAIM_TASK);
      const before = dropper.dropped;
      const claim = await backend.claimTask(id, "t1", "w", null);
      expect(dropper.dropped).toBe(before + 1);
      // Before the fix the second run found a live claim and answered null.
      expect(claim).toMatchObject({ instanceId: id, taskId: "t1", workerId: "w", expiresAt: null });
      expect(claim?.token).toBeGreaterThan(0);
      // It is the claim that is stored: its token fences a write.
      await direct.saveTaskResult(id, "t1", new Uint8Array([1]), { claim: claim! });
      // A different call of the same worker still sees a live claim (holder included) and gets null.
      await backend.saveSnapshot(atTask(id, "t2"));
      expect(await backend.claimTask(id, "t2", "w", 60_000)).not.toBeNull();
      expect(await backend.claimTask(id, "t2", "w", 60_000)).toBeNull();
    } finally {
      await backend.close();
      await direct.close();
      client.disconnect();
    }
  }, 20_000);

  it("a client that re-sends it gets the batch its first run claimed (claimAvailableTasks)", async () => {
    const keyPrefix = prefix("lost-batch");
    const client = new Redis(proxyUrl);
    client.on("error", () => {});
    // One shard: one claim-next script (no peek), whose reply is the one dropped.
    const backend = new RedisBackend({ client, keyPrefix, shards: 1, operationTimeoutMs: 5000 });
    const direct = new RedisBackend({ url: directUrl, keyPrefix, shards: 1 });
    try {
      await backend.saveSnapshot(atTask(uid(), "t1", { updatedAt: 1 }));
      expect(await backend.claimAvailableTasks("w", 1, null)).toHaveLength(1); // loads the script
      const ids = [uid(), uid(), uid()];
      for (const [i, id] of ids.entries())
        await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 10 + i }));
      dropper.arm(CLAIM_SHARD);
      const before = dropper.dropped;
      const claimed = await backend.claimAvailableTasks("w", 10, null);
      expect(dropper.dropped).toBe(before + 1);
      // Before the fix the second run found nothing left to claim: [] and three orphaned claims.
      expect(claimed.map((c) => c.instanceId)).toEqual(ids);
      for (const c of claimed) expect(c.claim.workerId).toBe("w");
      expect(await direct.findAvailableTasks("w", 10)).toEqual([]);
      for (const c of claimed) await direct.releaseTaskClaim(c.instanceId, c.taskId, "w");
      expect(await direct.findAvailableTasks("w", 10)).toHaveLength(3);
    } finally {
      await backend.close();
      await direct.close();
      client.disconnect();
    }
  }, 20_000);

  it("a completion whose reply was lost: the backend's own client fails it (BackendError), the results landed", async () => {
    const keyPrefix = prefix("lost-complete-own");
    const backend = new RedisBackend({ url: proxyUrl, keyPrefix, operationTimeoutMs: 1000 });
    const direct = new RedisBackend({ url: directUrl, keyPrefix });
    try {
      const [warm, a, b] = [uid(), uid(), uid()];
      for (const id of [warm, a, b]) await backend.saveSnapshot(atTask(id, "t1"));
      const warmClaim = await backend.claimTask(warm, "t1", "w", null);
      await backend.completeTasks([{ claim: warmClaim!, output: text("warm") }]); // loads the script
      const claims = [
        (await backend.claimTask(a, "t1", "w", null))!,
        (await backend.claimTask(b, "t1", "w", null))!,
      ];
      dropper.arm(COMPLETE);
      const before = dropper.dropped;
      const error = await rejection(
        backend.completeTasks(claims.map((claim) => ({ claim, output: text("out") }))),
      );
      expect(dropper.dropped).toBe(before + 1);
      expect(error).toBeInstanceOf(BackendError);
      // It ran: both results are stored and both claims released (another worker claims at once).
      for (const id of [a, b]) {
        const loaded = await direct.loadSnapshot(id);
        expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks.t1).toBeTruthy();
        expect(await direct.claimTask(id, "t1", "other", 1000)).not.toBeNull();
      }
    } finally {
      await backend.close();
      await direct.close();
    }
  }, 20_000);

  it("a client that re-sends a completion gets null for the results its first run stored, not CLAIM_LOST", async () => {
    const keyPrefix = prefix("lost-complete-resend");
    const client = new Redis(proxyUrl);
    client.on("error", () => {});
    const backend = new RedisBackend({ client, keyPrefix, operationTimeoutMs: 5000 });
    const direct = new RedisBackend({ url: directUrl, keyPrefix });
    try {
      const [warm, a, b, gone] = [uid(), uid(), uid(), uid()];
      for (const id of [warm, a, b]) await backend.saveSnapshot(atTask(id, "t1"));
      const warmClaim = await backend.claimTask(warm, "t1", "w", null);
      await backend.completeTasks([{ claim: warmClaim!, output: text("warm") }]); // loads the script
      const claims = [
        (await backend.claimTask(a, "t1", "w", null))!,
        (await backend.claimTask(b, "t1", "w", null))!,
      ];
      // An item refused in the first run is refused again (nothing of it was written).
      const onGone = (await backend.claimTask(gone, "t1", "w", null))!;
      dropper.arm(COMPLETE);
      const before = dropper.dropped;
      const outcomes = await backend.completeTasks(
        [...claims, onGone].map((claim) => ({ claim, output: text(`out-${claim.instanceId}`) })),
      );
      expect(dropper.dropped).toBe(before + 1);
      // Without the request id in the tombstone, the second run found the claims gone: CLAIM_LOST.
      expect(outcomes.map((o) => (o === null ? null : o.code))).toEqual([null, null, ErrorCode.NotFound]);
      for (const id of [a, b]) {
        const loaded = await direct.loadSnapshot(id);
        expect(
          loaded.state.kind === "InProgress" &&
            new TextDecoder().decode(loaded.state.completedTasks.t1?.output),
        ).toBe(`out-${id}`);
      }
      // Completing the same claims again in a new call is still refused.
      expect((await backend.completeTasks([{ claim: claims[0]!, output: text("again") }]))[0]).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
    } finally {
      await backend.close();
      await direct.close();
      client.disconnect();
    }
  }, 20_000);

  it("a sendEvent whose reply was lost: the own client fails it and the event is stored once; a re-sending client gets the first run's sequence", async () => {
    const keyPrefix = prefix("lost-event");
    const own = new RedisBackend({ url: proxyUrl, keyPrefix, operationTimeoutMs: 1000 });
    const client = new Redis(proxyUrl);
    client.on("error", () => {});
    const resending = new RedisBackend({ client, keyPrefix, operationTimeoutMs: 5000 });
    const direct = new RedisBackend({ url: directUrl, keyPrefix });
    try {
      const id = uid();
      await own.saveSnapshot(awaiting(id, "e", "t1"));
      expect(await own.sendEvent(id, "warm", text("w"))).toBe(1); // loads the script
      dropper.arm(SEND_EVENT);
      const before = dropper.dropped;
      const error = await rejection(own.sendEvent(id, "e", text("once")));
      expect(dropper.dropped).toBe(before + 1);
      // Not sent again: unknown outcome. It landed, once, and made the wait ready.
      expect(error).toBeInstanceOf(BackendError);
      expect((await direct.loadPendingEvents(id)).map((e) => [e.sequence, e.eventName])).toEqual([
        [1, "warm"],
        [2, "e"],
      ]);
      expect((await direct.findAvailableTasks("w", 10))[0]?.event).toEqual({ eventName: "e", sequence: 2 });
      // A client that re-sends: the second run answers the first run's sequence and appends nothing.
      expect(await resending.sendEvent(id, "warm", text("w2"))).toBe(3);
      dropper.arm(SEND_EVENT);
      expect(await resending.sendEvent(id, "e", text("again"))).toBe(4);
      expect(dropper.dropped).toBe(before + 2);
      expect((await direct.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([1, 2, 3, 4]);
    } finally {
      await own.close();
      await resending.close();
      await direct.close();
      client.disconnect();
    }
  }, 20_000);
});

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

/** Makes the backend's claim-next script fail (after it ran) on the calls `failOn` picks. */
function failShardClaims(failOn: (call: number) => boolean): FaultHooks {
  let calls = 0;
  return {
    aroundScript: async (name, _args, run) => {
      if (name !== "claimNext") return run();
      const call = ++calls;
      const reply = await run();
      if (failOn(call)) throw new Error("injected: connection lost after the script ran");
      return reply;
    },
  };
}

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`claimAvailableTasks with a failing shard (${name})`, () => {
    const t = target as Target;

    // On a standalone server one script claims for every shard: there is no part-way failure.
    it.skipIf(name === "standalone")(
      "returns the claims that landed instead of rejecting (they would be orphaned)",
      async () => {
        const keyPrefix = uid("partial");
        const backend = new RedisBackend({
          ...connection(t),
          keyPrefix,
          shards: 4,
          faults: failShardClaims((call) => call === 2),
        });
        const admin: Redis | Cluster = adminClient(t);
        try {
          const ids = Array.from({ length: 24 }, (_, i) => `${String(i).padStart(2, "0")}-${uid()}`);
          for (const [i, id] of ids.entries())
            await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1000 + i }));
          const shards = new Set(ids.map((id) => backend.layout.shardOf(id)));
          expect(shards.size).toBeGreaterThan(1);
          const claimed = await backend.claimAvailableTasks("w", 100, null);
          // Every shard but the failing one answered: those claims come back, in order.
          expect(claimed.length).toBeGreaterThan(0);
          expect(claimed.length).toBeLessThan(ids.length);
          const order = claimed.map((c) => c.instanceId);
          expect(order).toEqual(ids.filter((id) => order.includes(id)));
          // Nothing returned is claimable again; what the failed shard claimed is held (unknown outcome).
          expect(await backend.findAvailableTasks("w", 100)).toEqual([]);
          for (const c of claimed) await backend.releaseTaskClaim(c.instanceId, c.taskId, "w");
          expect(await backend.findAvailableTasks("w", 100)).toHaveLength(claimed.length);
        } finally {
          await backend.close();
          await dropPrefix(admin, keyPrefix);
          admin.disconnect();
        }
      },
    );

    it("rejects with BackendError only when nothing was claimed", async () => {
      const keyPrefix = uid("partial-none");
      const backend = new RedisBackend({
        ...connection(t),
        keyPrefix,
        shards: 1,
        faults: failShardClaims(() => true),
      });
      const admin: Redis | Cluster = adminClient(t);
      try {
        await backend.saveSnapshot(atTask(uid(), "t1"));
        const error = await rejection(backend.claimAvailableTasks("w", 10, null));
        expect(error).toBeInstanceOf(BackendError);
        expect(String((error as Error).message)).toContain("injected");
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        admin.disconnect();
      }
    });
  });
}

const clusterInfo = inject("redisCluster");

describe.skipIf(clusterInfo === null)("a claim whose reply was lost (cluster, through proxies)", () => {
  const arming: Arming = { markers: null, dropped: 0 };
  const droppers: ReplyDropper[] = [];
  const natMap: Record<string, { host: string; port: number }> = {};
  let admin: Cluster;
  const prefixes: string[] = [];

  beforeAll(async () => {
    admin = new Cluster(clusterInfo!.nodes);
    admin.on("error", () => {});
    await admin.ping();
    // One proxy per node, as the cluster announces them; the backend's client maps to them.
    for (const node of admin.nodes("all")) {
      const { host, port } = node.options as { host: string; port: number };
      const dropper = new ReplyDropper({ host, port }, arming);
      await dropper.start();
      droppers.push(dropper);
      natMap[`${host}:${port}`] = { host: "127.0.0.1", port: dropper.port };
    }
  });
  afterAll(async () => {
    for (const prefix of prefixes) await dropPrefix(admin, prefix);
    await admin.quit();
    for (const dropper of droppers) await dropper.stop();
  });

  it("the backend's own client does not send it again: BackendError (claim and delete), never null or NOT_FOUND", async () => {
    const keyPrefix = uid("lost-cluster");
    prefixes.push(keyPrefix);
    const seeds = droppers.map((d) => ({ host: "127.0.0.1", port: d.port }));
    const backend = new RedisBackend({
      cluster: { nodes: seeds, options: { natMap } },
      keyPrefix,
      operationTimeoutMs: 1000,
    });
    const direct = new RedisBackend({ cluster: { nodes: clusterInfo!.nodes }, keyPrefix });
    try {
      const [warm, id] = [uid(), uid()];
      await backend.saveSnapshot(atTask(warm, "t1"));
      await backend.saveSnapshot(atTask(id, "t1"));
      // The slot's node is connected and known (a command sent elsewhere would get MOVED, whose
      // reply the proxy would drop: the script would never run).
      await backend.loadSnapshot(id);
      arming.markers = CLAIM_TASK;
      const before = arming.dropped;
      const started = Date.now();
      const outcome = await backend.claimTask(id, "t1", "w", null).then(
        (claim) => ({ claim }),
        (error: unknown) => ({ error }),
      );
      expect(arming.dropped).toBe(before + 1);
      expect(Date.now() - started).toBeLessThan(1000 + 1500);
      // Not sent again (retryDelayOnFailover 0); were it sent again, the request id would make it
      // answer this claim, never null.
      expect("error" in outcome && outcome.error).toBeInstanceOf(BackendError);
      // The claim landed and is w's.
      expect(await direct.claimTask(id, "t1", "other", null)).toBeNull();
      await direct.releaseTaskClaim(id, "t1", "w");
      // A lost delete reply: never NOT_FOUND for a delete that succeeded.
      await eventually("the backend to reach the node again", async () => {
        try {
          return await backend.loadSnapshot(warm);
        } catch {
          return undefined;
        }
      });
      arming.markers = DELETE;
      const deleted = await rejection(backend.deleteSnapshot(warm));
      expect(arming.dropped).toBe(before + 2);
      // Before the fix the Cluster sent it again and it reported NOT_FOUND.
      expect(deleted).toBeInstanceOf(BackendError);
      expect(deleted).toMatchObject({ code: ErrorCode.Backend });
      expect(await rejection(direct.loadSnapshot(warm))).toMatchObject({ code: ErrorCode.NotFound });
      const claim = await eventually("the backend to reach the node again", async () => {
        try {
          return (await backend.claimTask(id, "t1", "w", null)) ?? undefined;
        } catch {
          return undefined;
        }
      });
      // A lost completion reply: BackendError (not sent again, so never CLAIM_LOST), and it landed.
      await backend.completeTasks([]); // nothing sent
      arming.markers = COMPLETE;
      const completed = await rejection(backend.completeTasks([{ claim, output: text("done") }]));
      expect(arming.dropped).toBe(before + 3);
      expect(completed).toBeInstanceOf(BackendError);
      const loaded = await direct.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks.t1).toBeTruthy();
    } finally {
      await backend.close();
      await direct.close();
    }
  }, 20_000);
});
