// Where the servers are: from vitest's inject() (the tools pass them in), from the SAYIIR_TEST_*
// variables (child processes, command lines), and the address a fault proxy forwards to.
import { type BackendName, SERVER_KINDS, type ServerKind, type ServerName } from "./names.ts";

/**
 * Server URLs by server kind (DynamoDB: its http endpoint; the Redis Cluster: its seed nodes
 * "host:port,host:port"). Missing or null: no such server.
 */
export type ServerUrls = Partial<Record<ServerName, string | null>>;

/** The variables the test tooling honours, by server kind. */
export const URL_VARIABLES: Readonly<Record<ServerName, string>> = {
  redis: "SAYIIR_TEST_REDIS_URL",
  "redis-cluster": "SAYIIR_TEST_REDIS_CLUSTER_NODES",
  postgres: "SAYIIR_TEST_POSTGRES_URL",
  mongodb: "SAYIIR_TEST_MONGODB_URL",
  dynamodb: "SAYIIR_TEST_DYNAMODB_ENDPOINT",
};

/** Server URLs from the environment (used by child processes and command lines). */
export function urlsFromEnv(env: NodeJS.ProcessEnv = process.env): ServerUrls {
  return {
    redis: env[URL_VARIABLES.redis] ?? null,
    "redis-cluster": env[URL_VARIABLES["redis-cluster"]] ?? null,
    postgres: env[URL_VARIABLES.postgres] ?? null,
    mongodb: env[URL_VARIABLES.mongodb] ?? null,
    dynamodb: env[URL_VARIABLES.dynamodb] ?? null,
  };
}

/** The environment that hands `urls` to a child process (see urlsFromEnv). */
export function envOfUrls(urls: ServerUrls): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [kind, variable] of Object.entries(URL_VARIABLES) as Array<[ServerName, string]>) {
    const url = urls[kind];
    if (url) env[variable] = url;
  }
  return env;
}

const DEFAULT_PORTS: Record<ServerKind, number> = {
  redis: 6379,
  postgres: 5432,
  mongodb: 27017,
  dynamodb: 8000,
};

/** Host and port of a backend's server (where a fault proxy forwards to), or null. */
export function serverAddress(name: BackendName, urls: ServerUrls): { host: string; port: number } | null {
  const kind = SERVER_KINDS[name];
  if (kind === null) return null;
  const url = urls[kind];
  if (!url) return null;
  const parsed = new URL(url);
  return {
    host: parsed.hostname || "127.0.0.1",
    port: parsed.port ? Number(parsed.port) : DEFAULT_PORTS[kind],
  };
}

/** `url` with its host and port replaced by `via` (a fault proxy); `url` itself without one. */
export function through(url: string, via: { host: string; port: number } | undefined): string {
  if (via === undefined) return url;
  const parsed = new URL(url);
  parsed.hostname = via.host;
  parsed.port = String(via.port);
  return parsed.toString();
}
