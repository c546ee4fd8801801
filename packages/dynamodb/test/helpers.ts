import { DeleteTableCommand, DynamoDBClient, GetItemCommand, ScanCommand } from "@aws-sdk/client-dynamodb";
import type { DynamoDbInfo } from "@sayiir/test-servers";
import { uniqueTestName } from "@sayiir/test-servers";
import { onTestFinished } from "vitest";
import type { DynamoDBBackend, DynamoDBBackendOptions } from "../src/index.js";
import { clientConfig, createSubject, ensureTable } from "./subject.js";

/** A table of its own (migrated), dropped when the test ends: for tests that scan the table. */
export async function freshTable(info: DynamoDbInfo): Promise<string> {
  const tableName = uniqueTestName("sayiir_own");
  await ensureTable(info, tableName);
  onTestFinished(async () => {
    const client = new DynamoDBClient(clientConfig(info));
    try {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    } finally {
      client.destroy();
    }
  });
  return tableName;
}

/**
 * The backend of a fresh subject (its own key prefix of the shared test table, or of
 * `extra.tableName`), closed when the test ends. `extra` overrides any option.
 */
export async function freshBackend(extra: Partial<DynamoDBBackendOptions> = {}): Promise<DynamoDBBackend> {
  const { backend } = await createSubject({}, { keyPrefix: uniqueTestName("ddbx"), ...extra });
  onTestFinished(() => backend.close());
  return backend;
}

/** Every item stored under a backend's key prefix (a scan: tests only). */
export async function itemsOf(backend: DynamoDBBackend): Promise<Array<{ pk: string; sk: string }>> {
  const items: Array<{ pk: string; sk: string }> = [];
  let startKey: Record<string, import("@aws-sdk/client-dynamodb").AttributeValue> | undefined;
  do {
    const out = await backend.client.send(
      new ScanCommand({
        TableName: backend.tableName,
        ConsistentRead: true,
        ExclusiveStartKey: startKey,
        FilterExpression: "begins_with(PK, :base)",
        ProjectionExpression: "PK, SK",
        ExpressionAttributeValues: { ":base": { S: backend.layout.base } },
      }),
    );
    for (const item of out.Items ?? []) items.push({ pk: item.PK?.S ?? "", sk: item.SK?.S ?? "" });
    startKey = out.LastEvaluatedKey;
  } while (startKey !== undefined);
  return items;
}

export const isChunk = (backend: DynamoDBBackend, item: { pk: string }): boolean =>
  item.pk.startsWith(`${backend.layout.base}C#`);

/** The head item of an instance as stored (a consistent read; {} when there is none). */
export function rawHead(backend: DynamoDBBackend, id: string) {
  return rawItem(backend, id, "H");
}

/** One stored item of an instance, by sort key, as DynamoDB holds it (empty: none). */
export async function rawItem(backend: DynamoDBBackend, id: string, sk: string) {
  const out = await backend.client.send(
    new GetItemCommand({
      TableName: backend.tableName,
      Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: sk } },
      ConsistentRead: true,
    }),
  );
  return out.Item ?? {};
}
