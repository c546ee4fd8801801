import { DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import type { ConformanceSubject, SubjectOptions } from "@sayiir/persistence-core/conformance";
import { type DynamoDbInfo, dynamoDbClientConfig, uniqueTestName } from "@sayiir/test-servers";
import { inject } from "vitest";
import { DynamoDBBackend, type DynamoDBBackendOptions } from "../src/index.js";

/** The server the suites run against, or null (the suite is then skipped outside CI). */
export function server(): DynamoDbInfo | null {
  return inject("dynamodb");
}

export const TABLE = "sayiir_test";

export function clientConfig(info: DynamoDbInfo) {
  return { ...dynamoDbClientConfig(info), maxAttempts: 3 };
}

const migrated = new Map<string, Promise<void>>();

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
  info: DynamoDBInfoLike,
  extra: Partial<DynamoDBBackendOptions> = {},
): DynamoDBBackendOptions {
  return { tableName: TABLE, clientConfig: clientConfig(info), ...extra };
}
type DynamoDBInfoLike = DynamoDbInfo;

/** A fresh, isolated subject: its own key prefix on the shared table. */
export async function makeSubject(
  info: DynamoDbInfo,
  options: SubjectOptions = {},
): Promise<ConformanceSubject> {
  await ensureTable(info);
  const keyPrefix = uniqueTestName("ddb");
  const open = (): DynamoDBBackend =>
    new DynamoDBBackend(backendOptions(info, { keyPrefix, maxPayloadBytes: options.maxPayloadBytes }));
  const backend = open();
  return {
    backend,
    connect: async () => open(),
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
      const client = new DynamoDBClient(clientConfig(info));
      try {
        await client.send(
          new UpdateItemCommand({
            TableName: TABLE,
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
