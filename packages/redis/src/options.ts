import { type BaseBackendOptions, ValidationError } from "@sayiir/persistence-core";
import { connectionSecrets } from "@sayiir/persistence-core/adapter";
import { Cluster, type ClusterNode, type ClusterOptions, Redis, type RedisOptions } from "ioredis";
import { normalizeReplicaAcks, type ReplicaAcks } from "./replica-acks.js";
import type { FaultHooks } from "./scripts/index.js";

export interface RedisBackendOptions extends BaseBackendOptions {
  /** A redis:// or rediss:// URL: the backend opens (and closes) its own standalone client. */
  url?: string;
  /** ioredis options for a standalone client the backend opens (and closes). */
  redis?: RedisOptions;
  /** Seed nodes (and options) of a Redis Cluster the backend connects to (and closes). */
  cluster?: { nodes: ClusterNode[]; options?: ClusterOptions };
  /** An existing ioredis client (Redis or Cluster); close() leaves it open. */
  client?: Redis | Cluster;
  /**
   * Start of every key (inside the hash tag), so several applications can share one Redis.
   * Default "sayiir". Must not contain "{" or "}".
   */
  keyPrefix?: string;
  /**
   * Number of shards of the ready index and of the instance-id index. Default: 16 on a Redis
   * Cluster (each shard is one slot, so this is also the most masters the data can spread over),
   * 1 on a standalone server (where shards only add work). The count is recorded in the store on
   * first use (`{<keyPrefix>:layout}`): a backend without this option takes the recorded count,
   * and one whose option differs from it fails every operation with ValidationError.
   */
  shards?: number;
  /**
   * Upper bound on any single operation's wait for Redis, in ms (default 10,000). Also used as
   * ioredis's commandTimeout and connectTimeout on clients the backend opens. An operation that
   * times out fails with BackendError; like any timed-out write its outcome is unknown.
   */
  operationTimeoutMs?: number;
  /**
   * After every write script, `WAIT replicas timeoutMs` on the connection (the node) that ran it; a
   * write fewer replicas acknowledged fails with BackendError ("may be lost on failover") instead
   * of succeeding. Default: off (a write is acknowledged by the master alone). Not strong
   * consistency: see "Replica acknowledgements" in the README.
   */
  replicaAcks?: ReplicaAcks;
  /** @internal For this package's tests only (see FaultHooks); not a stable API. */
  faults?: FaultHooks;
}

export interface NormalizedOptions {
  keyPrefix: string;
  /** The shard count given in the options, if any. */
  shards: number | undefined;
  operationTimeoutMs: number;
  replicaAcks: ReplicaAcks | undefined;
  /** The client, and whether the backend owns it (then close() quits it). */
  client: Redis | Cluster;
  owned: boolean;
  secrets: string[];
  faults: FaultHooks | undefined;
}

export const DEFAULT_KEY_PREFIX = "sayiir";
/** Default shard count on a Redis Cluster. */
export const DEFAULT_CLUSTER_SHARDS = 16;
/** Default shard count on a standalone server (for a new store; an existing one keeps its count). */
export const DEFAULT_STANDALONE_SHARDS = 1;
export const MAX_SHARDS = 16_384;
export const DEFAULT_OPERATION_TIMEOUT_MS = 10_000;

function retryDelay(times: number): number {
  return Math.min(50 * times, 1000);
}

/** ioredis settings that make every command fail within a bounded time while Redis is away. */
function standaloneDefaults(timeoutMs: number): RedisOptions {
  return {
    commandTimeout: timeoutMs,
    connectTimeout: timeoutMs,
    // commandTimeout fails a command but keeps its socket: after a silent drop (a half-open
    // connection) every later command would time out too. An idle socket timeout makes ioredis
    // close it and reconnect.
    socketTimeout: timeoutMs,
    // A command waits for at most one reconnect attempt, then fails; reconnecting goes on forever.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    // Never send a command again after its connection dropped: a script whose reply was lost may
    // have run, and running it twice is not the same as once (a claim would answer null, a delete
    // NOT_FOUND). The command fails instead (BackendError, outcome unknown).
    autoResendUnfulfilledCommands: false,
    retryStrategy: retryDelay,
  };
}

/** A URL the standalone client can open: it parses, and its password decodes. */
function checkUrl(url: string): void {
  try {
    decodeURIComponent(new URL(url).password);
  } catch {
    throw new ValidationError("url is not a valid redis:// URL");
  }
}

function positiveInt(name: string, value: unknown, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new ValidationError(`${name} must be an integer from 1 to ${max}`);
  }
  return value;
}

export function normalizeOptions(options: RedisBackendOptions): NormalizedOptions {
  const keyPrefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX;
  if (
    typeof keyPrefix !== "string" ||
    keyPrefix.length === 0 ||
    /[{}\0]/.test(keyPrefix) ||
    !keyPrefix.isWellFormed()
  ) {
    throw new ValidationError('keyPrefix must be a non-empty string without "{", "}" or U+0000');
  }
  const shards =
    options.shards === undefined ? undefined : positiveInt("shards", options.shards, 1, MAX_SHARDS);
  const operationTimeoutMs = positiveInt(
    "operationTimeoutMs",
    options.operationTimeoutMs,
    DEFAULT_OPERATION_TIMEOUT_MS,
    3_600_000,
  );
  const replicaAcks = normalizeReplicaAcks(options.replicaAcks, operationTimeoutMs);
  const sources = [options.url, options.redis, options.cluster, options.client].filter(
    (s) => s !== undefined,
  );
  if (sources.length !== 1) {
    throw new ValidationError("give exactly one of url, redis, cluster or client");
  }
  const defaults = standaloneDefaults(operationTimeoutMs);
  const secrets: string[] = [];
  let client: Redis | Cluster;
  let owned = true;
  if (options.client !== undefined) {
    client = options.client;
    owned = false;
  } else if (options.url !== undefined) {
    if (typeof options.url !== "string") throw new ValidationError("url must be a string");
    checkUrl(options.url);
    secrets.push(...connectionSecrets(options.url));
    client = new Redis(options.url, defaults);
  } else if (options.redis !== undefined) {
    if (typeof options.redis.password === "string" && options.redis.password)
      secrets.push(options.redis.password);
    client = new Redis({ ...defaults, ...options.redis });
  } else {
    const cluster = options.cluster as { nodes: ClusterNode[]; options?: ClusterOptions };
    const given = cluster.options ?? {};
    const password = given.redisOptions?.password;
    if (typeof password === "string" && password) secrets.push(password);
    for (const node of cluster.nodes ?? []) {
      // Not a URL after all: no secrets, and ioredis reports it.
      if (typeof node === "string" && node.includes("://")) secrets.push(...connectionSecrets(node));
    }
    client = new Cluster(cluster.nodes, {
      enableOfflineQueue: true,
      clusterRetryStrategy: retryDelay,
      // A node's connection that drops fails the commands sent on it with "Connection is
      // closed."; by default the Cluster then sends them again (to the slot's node, after a slots
      // refresh), which runs a script whose reply was lost a second time, just as
      // autoResendUnfulfilledCommands does on one connection. 0 turns that off: such a command
      // fails (BackendError, outcome unknown). MOVED, ASK and TRYAGAIN are still followed.
      retryDelayOnFailover: 0,
      ...given,
      redisOptions: { ...defaults, ...given.redisOptions },
    });
  }
  const clientPrefix = (client.options as { keyPrefix?: string }).keyPrefix;
  const nodePrefix = (client.options as ClusterOptions).redisOptions?.keyPrefix;
  if (clientPrefix || nodePrefix) {
    if (owned) client.disconnect();
    throw new ValidationError(
      "the ioredis keyPrefix option is not supported: use the backend's keyPrefix option",
    );
  }
  return {
    keyPrefix,
    shards,
    operationTimeoutMs,
    replicaAcks,
    client,
    owned,
    secrets,
    faults: options.faults,
  };
}
