// The backend names every tool accepts, the server each one needs, and the accepted aliases.

/** Backend names: the adapters' kinds. */
export const BACKEND_NAMES = ["memory", "sqlite", "redis", "postgres", "mongo", "dynamodb"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Server kinds, as @sayiir/test-servers names them (and its SAYIIR_TEST_* variables). */
export type ServerKind = "redis" | "postgres" | "mongodb" | "dynamodb";

/** The server each backend needs (null: in-process or a local file). */
export const SERVER_KINDS: Readonly<Record<BackendName, ServerKind | null>> = {
  memory: null,
  sqlite: null,
  redis: "redis",
  postgres: "postgres",
  mongo: "mongodb",
  dynamodb: "dynamodb",
};

/**
 * The Redis adapter on a Redis Cluster: the registry opens it by this name, but it is no adapter
 * kind of its own, so it is not a BackendName (tools that loop over BACKEND_NAMES, the fuzzer, the
 * fault proxy, the demo, do not get it unless they name it). Its server is given as seed nodes
 * "host:port,host:port" (SAYIIR_TEST_REDIS_CLUSTER_NODES).
 */
export const REDIS_CLUSTER = "redis-cluster";
/** What the registry opens by name: a backend, or the Redis adapter on a cluster. */
export type TargetName = BackendName | typeof REDIS_CLUSTER;
/** The servers the registry knows: the backends' and the Redis Cluster's. */
export type ServerName = ServerKind | typeof REDIS_CLUSTER;

/** Parses a backend name (or alias), or "redis-cluster". */
export function parseTargetName(name: string): TargetName {
  return name === REDIS_CLUSTER ? REDIS_CLUSTER : parseBackendName(name);
}

/** Other spellings the tools accepted before (the bench said "mongodb", the server kind). */
export const BACKEND_ALIASES: Readonly<Record<string, BackendName>> = { mongodb: "mongo" };

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

/** The backend a name or alias means, or undefined. */
export function backendNamed(name: string): BackendName | undefined {
  return isBackendName(name) ? name : BACKEND_ALIASES[name];
}

/** Parses a backend name (or alias); throws a message listing what is accepted. */
export function parseBackendName(name: string): BackendName {
  const found = backendNamed(name);
  if (found === undefined) {
    const aliases = Object.entries(BACKEND_ALIASES).map(([alias, to]) => `${alias} for ${to}`);
    throw new Error(
      `unknown backend ${JSON.stringify(name)} (expected ${BACKEND_NAMES.join(", ")}; also ${aliases.join(", ")})`,
    );
  }
  return found;
}
