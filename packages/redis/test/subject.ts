import { randomUUID } from "node:crypto";
import type {
  ConformanceOptions,
  ConformanceSubject,
  SubjectOptions,
} from "@sayiir/persistence-core/conformance";
import { howToGet } from "@sayiir/test-servers";
import { Cluster, Redis } from "ioredis";
import { afterAll, inject } from "vitest";
import { RedisBackend, type RedisBackendOptions } from "../src/index.js";
import type { FaultHooks, ScriptName } from "../src/scripts/index.js";

/** The servers from the test tooling (null when missing). */
export const standalone = inject("redis");
export const cluster = inject("redisCluster");

export const NO_SERVER = `no Redis server: ${howToGet("redis")}`;

/** Where the tests run: a standalone server (url) or a cluster (seed nodes). */
export type Target =
  | { kind: "standalone"; url: string }
  | { kind: "cluster"; nodes: Array<{ host: string; port: number }> };

/** The targets of this run, by kind (null when its server is missing). */
export const targets: { standalone: Target | null; cluster: Target | null } = {
  standalone: standalone ? { kind: "standalone", url: standalone.url } : null,
  cluster: cluster ? { kind: "cluster", nodes: cluster.nodes } : null,
};

/** Connection options of a backend that opens its own client on the target. */
export function connection(target: Target): RedisBackendOptions {
  return target.kind === "standalone" ? { url: target.url } : { cluster: { nodes: target.nodes } };
}

/** A plain client on the target, for set-up and clean-up outside the backend (the caller closes it). */
export function adminClient(target: Target): Redis | Cluster {
  const client = target.kind === "standalone" ? new Redis(target.url) : new Cluster(target.nodes);
  client.on("error", () => {});
  return client;
}

/** Deletes every key of one backend's prefix (on every master of a cluster). */
export async function dropPrefix(admin: Redis | Cluster, prefix: string): Promise<void> {
  // A new Cluster client knows its nodes only once connected.
  if (admin instanceof Cluster) await admin.ping();
  const nodes = admin instanceof Cluster ? admin.nodes("master") : [admin];
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", `{${prefix}:*`, "COUNT", 1000);
      cursor = next;
      // One UNLINK per key: keys of different shards live in different slots.
      await Promise.all(keys.map((key) => node.unlink(key)));
    } while (cursor !== "0");
  }
}

/*
 * One admin client per target, shared by the subjects of a test file and closed after it (the
 * hook is registered on the file that imports this module).
 */
const admins = new Map<string, Redis | Cluster>();

function sharedAdmin(target: Target): Redis | Cluster {
  const key = JSON.stringify(target);
  let admin = admins.get(key);
  if (admin === undefined) {
    admin = adminClient(target);
    admins.set(key, admin);
  }
  return admin;
}

afterAll(async () => {
  const open = [...admins.values()];
  admins.clear();
  await Promise.allSettled(open.map((admin) => admin.quit()));
});

/** The target of a backend's options: its own url or cluster, else the standalone server. */
function targetOf(options: Partial<RedisBackendOptions>): Target {
  if (options.url !== undefined) return { kind: "standalone", url: options.url };
  if (options.cluster !== undefined) {
    return { kind: "cluster", nodes: options.cluster.nodes as Array<{ host: string; port: number }> };
  }
  if (targets.standalone === null) throw new Error(NO_SERVER);
  return targets.standalone;
}

export interface RedisSubject extends ConformanceSubject {
  backend: RedisBackend;
  keyPrefix: string;
  /** Drops every key of the subject's prefix (close the backends first). */
  cleanup: () => Promise<void>;
}

/** The scripts that only read (beforeNextWrite lets them through). */
const READS = new Set<ScriptName>([
  "loadSnapshot",
  "loadHeader",
  "loadEvents",
  "loadSteps",
  "loadTaskClaims",
  "loadTaskResult",
  "peek",
  "probeWakeUp",
  "shardInputs",
  "peekFinished",
]);

/**
 * A fresh subject: a key prefix of its own on the target, a backend over it, and connect() for
 * another backend (another client) on the same prefix. The target is `extra`'s `url` or
 * `cluster`, else the standalone server; `extra` adds or overrides backend options (`shards`,
 * `faults`, ...; a `keyPrefix` of its own is used as given).
 */
export async function createSubject(
  { maxPayloadBytes, agingMs }: SubjectOptions = {},
  extra: Partial<RedisBackendOptions> = {},
): Promise<RedisSubject> {
  const target = targetOf(extra);
  const keyPrefix = extra.keyPrefix ?? `t-${randomUUID()}`;
  const options: RedisBackendOptions = {
    ...connection(target),
    ...(maxPayloadBytes === undefined ? {} : { maxPayloadBytes }),
    ...(agingMs === undefined ? {} : { agingMs }),
    ...extra,
    keyPrefix,
  };
  // The first backend's scripts go through a hook (unless `extra` brings its own `faults`): the
  // kit's beforeNextWrite holds its next script that writes.
  const held = { hook: null as null | (() => Promise<void>), fired: false };
  const seam: FaultHooks = {
    aroundScript: async (name, _args, run) => {
      const hook = held.hook;
      if (hook === null || READS.has(name)) return run();
      held.hook = null;
      await hook();
      held.fired = true;
      return run();
    },
  };
  const backend = new RedisBackend(extra.faults === undefined ? { ...options, faults: seam } : options);
  return {
    backend,
    keyPrefix,
    connect: async () => new RedisBackend(options),
    beforeNextWrite: (hook) => {
      held.hook = hook;
      held.fired = false;
      return { fired: () => held.fired };
    },
    corruptSnapshot: async (instanceId) => {
      await sharedAdmin(target).hset(backend.layout.instance(instanceId).meta, "h", "not a snapshot");
    },
    cleanup: async () => dropPrefix(sharedAdmin(target), keyPrefix),
  };
}

/**
 * Standalone runs twice: with its default of one shard, and with 4 shards, where one script
 * covers every shard (claim-next and discovery merge them by age inside Lua, completion spans
 * them). The cluster runs with its default of 16 shards, one script per shard.
 */
export function conformanceTargets(): ConformanceOptions[] {
  const out: ConformanceOptions[] = [];
  if (standalone) {
    const url = standalone.url;
    out.push(
      { name: `redis standalone ${standalone.version}`, setup: (o) => createSubject(o, { url }) },
      {
        name: `redis standalone ${standalone.version}, 4 shards`,
        setup: (o) => createSubject(o, { url, shards: 4 }),
      },
    );
  }
  if (cluster) {
    const nodes = cluster.nodes;
    out.push({
      name: `redis cluster ${cluster.version}, ${cluster.nodes.length} masters`,
      setup: (o) => createSubject(o, { cluster: { nodes } }),
    });
  }
  return out;
}

/** Records the routing key (KEYS[1]) of every call of one script, through the backend's fault hooks. */
export function scriptCalls(script: ScriptName): { faults: FaultHooks; routed: string[] } {
  const routed: string[] = [];
  return {
    routed,
    faults: {
      aroundScript: (name, args, run) => {
        if (name === script) routed.push(String(args[0]));
        return run();
      },
    },
  };
}
