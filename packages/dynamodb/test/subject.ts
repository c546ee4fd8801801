import { DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import type {
  ConformanceOptions,
  ConformanceSubject,
  SubjectOptions,
} from "@sayiir/persistence-core/conformance";
import { type DynamoDbInfo, dynamoDbClientConfig, uniqueTestName } from "@sayiir/test-servers";
import { inject } from "vitest";
import { DynamoDBBackend, type DynamoDBBackendOptions } from "../src/index.js";
import { beforeNextOf, WRITES } from "./faults.js";

/** Why the suites are skipped when there is no server. */
export const NO_SERVER = "no DynamoDB server: set SAYIIR_TEST_DYNAMODB_ENDPOINT or install DynamoDB Local";

/** The server the suites run against, or null (the suites are then skipped, saying NO_SERVER). */
export function server(): DynamoDbInfo | null {
  return inject("dynamodb");
}

/** The server, for code that only runs when there is one. */
function info(): DynamoDbInfo {
  const found = server();
  if (found === null) throw new Error(NO_SERVER);
  return found;
}

export const TABLE = "sayiir_test";

export function clientConfig(info: DynamoDbInfo) {
  return { ...dynamoDbClientConfig(info), maxAttempts: 3 };
}

const migrated = new Map<string, Promise<unknown>>();

/** Creates the shared test table once per process (every subject gets its own key prefix). */
export async function ensureTable(info: DynamoDbInfo, tableName = TABLE): Promise<void> {
  const key = `${info.endpoint}|${tableName}`;
  let done = migrated.get(key);
  if (done === undefined) {
    const backend = new DynamoDBBackend({ tableName, clientConfig: clientConfig(info) });
    done = backend.migrate().finally(() => backend.close());
    migrated.set(key, done);
  }
  await done;
}

export function backendOptions(
  info: DynamoDbInfo,
  extra: Partial<DynamoDBBackendOptions> = {},
): DynamoDBBackendOptions {
  return { tableName: TABLE, clientConfig: clientConfig(info), ...extra };
}

/** A conformance subject whose backends are DynamoDBBackends, with the key prefix they share. */
export interface DynamoDBSubject extends ConformanceSubject {
  backend: DynamoDBBackend;
  connect: () => Promise<DynamoDBBackend>;
  keyPrefix: string;
}

/**
 * A fresh, isolated subject: its own key prefix on the shared table (or on `extra.tableName`,
 * which the caller has migrated). `extra` overrides any backend option, the key prefix included.
 */
export async function createSubject(
  options: SubjectOptions = {},
  extra: Partial<DynamoDBBackendOptions> = {},
): Promise<DynamoDBSubject> {
  const ddb = info();
  await ensureTable(ddb);
  const keyPrefix = extra.keyPrefix ?? uniqueTestName("ddb");
  const open = (): DynamoDBBackend =>
    new DynamoDBBackend(
      backendOptions(ddb, {
        maxPayloadBytes: options.maxPayloadBytes,
        ...(options.agingMs === undefined ? {} : { agingMs: options.agingMs }),
        ...extra,
        keyPrefix,
      }),
    );
  const backend = open();
  return {
    backend,
    keyPrefix,
    connect: async () => open(),
    // The first backend's next write request (a transaction, a put, an update) waits for `hook`.
    beforeNextWrite: (hook) => beforeNextOf(backend.client, WRITES, hook),
    // Keeps the shared table small on a long-lived server: drop what the test stored.
    cleanup: async () => {
      const sweeper = open();
      try {
        for (const id of await sweeper.listSnapshots())
          await sweeper.deleteSnapshot(id).catch(() => undefined);
      } finally {
        await sweeper.close();
      }
    },
    corruptSnapshot: async (instanceId) => {
      const client = new DynamoDBClient(clientConfig(ddb));
      try {
        await client.send(
          new UpdateItemCommand({
            TableName: backend.tableName,
            Key: { PK: { S: backend.layout.instancePk(instanceId) }, SK: { S: "H" } },
            UpdateExpression: "SET hd = :bad REMOVE hc, hn, hl",
            ExpressionAttributeValues: { ":bad": { B: new TextEncoder().encode("not a snapshot") } },
          }),
        );
      } finally {
        client.destroy();
      }
    },
  };
}

/** One target: the DynamoDB server the test servers started (or the endpoint given). */
export function conformanceTargets(): ConformanceOptions[] {
  const ddb = server();
  if (ddb === null) return [];
  return [
    {
      name: `dynamodb (${ddb.server} ${ddb.version})`,
      slowTestTimeoutMs: 180_000,
      setup: (options) => createSubject(options),
    },
  ];
}
