// Public surface of @sayiir/test-servers: the shapes the global setups `provide`, and small helpers
// for the adapters' tests.
//
// This file is deliberately self-contained (no relative value imports): adapters' TypeScript programs
// pull it in through the package's exports, and their tsconfig does not set
// `allowImportingTsExtensions`, which a `./x.ts` value import would require.

/** The kinds of server a vitest global setup of this package can provide. */
export type ServerKind = "redis" | "redis-cluster" | "postgres" | "mongodb" | "dynamodb";

/** Where a server came from, in the order they are tried. */
export type ServerSource = "env" | "testcontainers" | "local";

/**
 * Present on servers this tooling started as local processes, so fault tests can pause
 * (`process.kill(pid, "SIGSTOP")` / `"SIGCONT"`) or kill one. The process is in its own process group
 * (`pgid`); teardown kills that group, so a test that kills a server need not restart it.
 */
export interface ServerControl {
  pid: number;
  pgid: number;
  port: number;
  /** Throw-away directory of this server (data, logs); removed at teardown. */
  dataDir: string;
  logFile: string;
}

export interface ServerInfo {
  kind: ServerKind;
  /** Connection URL (for DynamoDB: the HTTP endpoint). */
  url: string;
  /** What the server is, e.g. "redis-server (Debian package)". */
  server: string;
  /** Version as reported by the running server through its official client. */
  version: string;
  source: ServerSource;
  control?: ServerControl;
}

export interface RedisClusterInfo extends ServerInfo {
  nodes: Array<{ host: string; port: number }>;
  /** One entry per node when this tooling started the nodes (same order as `nodes`). */
  nodeControls?: ServerControl[];
}

export interface MongoDbInfo extends ServerInfo {
  /** True when the server is not MongoDB itself but a wire-compatible stand-in (mongo-java-server). */
  standIn: boolean;
}

export interface DynamoDbCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface DynamoDbInfo extends ServerInfo {
  /** Same as `url`. */
  endpoint: string;
  region: string;
  /** Fixed fake credentials ({@link DYNAMODB_TEST_CREDENTIALS}); DynamoDB Local runs with `-sharedDb`. */
  credentials: DynamoDbCredentials;
}

/** Why a server kind was not provided (only outside CI; in CI a missing server fails the setup). */
export type UnavailableServers = Partial<Record<ServerKind, string>>;

declare module "vitest" {
  export interface ProvidedContext {
    redis: ServerInfo | null;
    redisCluster: RedisClusterInfo | null;
    /** One per PostgreSQL version available; empty when none (only possible outside CI). */
    postgres: ServerInfo[];
    mongodb: MongoDbInfo | null;
    dynamodb: DynamoDbInfo | null;
    /** Reasons for every kind that a setup could not provide, with how to get it. */
    testServersUnavailable: UnavailableServers;
  }
}

/**
 * Fake credentials for DynamoDB Local / dynalite / the CI service container (none checks them).
 * Not frozen: the AWS SDK tags the credentials object it is given; pass a copy (as
 * {@link dynamoDbClientConfig} does) to keep this one clean.
 */
export const DYNAMODB_TEST_CREDENTIALS: DynamoDbCredentials = {
  accessKeyId: "sayiirtest",
  secretAccessKey: "sayiir-test-secret",
};

export const DYNAMODB_TEST_REGION = "us-east-1";

/** The environment variables that point the suites at servers you run yourself. */
export const ENV_VARS = Object.freeze({
  redis: "SAYIIR_TEST_REDIS_URL",
  "redis-cluster": "SAYIIR_TEST_REDIS_CLUSTER_NODES",
  postgres: "SAYIIR_TEST_POSTGRES_URL",
  mongodb: "SAYIIR_TEST_MONGODB_URL",
  dynamodb: "SAYIIR_TEST_DYNAMODB_ENDPOINT",
} satisfies Record<ServerKind, string>);

/** The command that installs the local servers of one kind (run from the repository root). */
export function installCommand(kind?: ServerKind): string {
  return `node tooling/test-servers/src/install.ts${kind ? ` ${kind}` : ""}`;
}

/** A one-line explanation of how to get a server of this kind, for skip messages. */
export function howToGet(kind: ServerKind): string {
  const example: Record<ServerKind, string> = {
    redis: "redis://127.0.0.1:6379",
    "redis-cluster": "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
    postgres: "postgres://user:pw@127.0.0.1:5432/db",
    mongodb: "mongodb://127.0.0.1:27017",
    dynamodb: "http://127.0.0.1:8000",
  };
  return (
    `set ${ENV_VARS[kind]}=${example[kind]}, or run a container runtime (Docker/Podman) for testcontainers, ` +
    `or install the local server once with \`${installCommand(kind)}\``
  );
}

/** Client settings for `new DynamoDBClient(...)` pointing at a provided DynamoDB server. */
export function dynamoDbClientConfig(info: DynamoDbInfo): {
  endpoint: string;
  region: string;
  credentials: DynamoDbCredentials;
} {
  return { endpoint: info.endpoint, region: info.region, credentials: { ...info.credentials } };
}

/**
 * A name unique to this test process and call, for key prefixes, schemas, databases and tables, so
 * test files running in parallel against one server never see each other's data. Only [a-z0-9_].
 */
export function uniqueTestName(prefix = "t"): string {
  uniqueCounter += 1;
  const random = Math.floor(Math.random() * 36 ** 4).toString(36);
  return `${prefix}_${process.pid.toString(36)}_${Date.now().toString(36)}_${uniqueCounter}_${random}`
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_");
}
let uniqueCounter = 0;
