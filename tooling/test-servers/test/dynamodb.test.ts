import {
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ListTablesCommand,
  PutItemCommand,
  ResourceNotFoundException,
} from "@aws-sdk/client-dynamodb";
import { describe, expect, inject, it } from "vitest";
import { dynamoDbClientConfig, uniqueTestName } from "../src/index.ts";

const dynamodb = inject("dynamodb");

/** CreateTable and DeleteTable are asynchronous in DynamoDB (and dynalite): poll, with a deadline. */
async function waitForTable(
  client: DynamoDBClient,
  TableName: string,
  want: "ACTIVE" | "GONE",
): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    let status: string | undefined;
    try {
      status = (await client.send(new DescribeTableCommand({ TableName }))).Table?.TableStatus;
    } catch (error) {
      if (!(error instanceof ResourceNotFoundException)) throw error;
      status = "GONE";
    }
    if (status === want) return;
    if (Date.now() > deadline) throw new Error(`table ${TableName} is ${status}, not ${want}, after 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!dynamodb)(
  `dynamodb: ${dynamodb ? `${dynamodb.server}` : inject("testServersUnavailable").dynamodb}`,
  () => {
    it("creates a table, puts, gets, and deletes it with the AWS SDK v3", async () => {
      expect(dynamodb!.version).toMatch(/ListTables ok/);
      const client = new DynamoDBClient(dynamoDbClientConfig(dynamodb!));
      const TableName = uniqueTestName("smoke");
      try {
        await client.send(
          new CreateTableCommand({
            TableName,
            AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }],
            KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
            BillingMode: "PAY_PER_REQUEST",
          }),
        );
        await waitForTable(client, TableName, "ACTIVE");
        expect((await client.send(new ListTablesCommand({}))).TableNames).toContain(TableName);
        await client.send(
          new PutItemCommand({ TableName, Item: { pk: { S: "k" }, v: { B: new Uint8Array([0, 1, 255]) } } }),
        );
        const got = await client.send(
          new GetItemCommand({ TableName, Key: { pk: { S: "k" } }, ConsistentRead: true }),
        );
        expect(got.Item?.v?.B).toEqual(new Uint8Array([0, 1, 255]));
        await client.send(new DeleteTableCommand({ TableName }));
        await waitForTable(client, TableName, "GONE");
        expect((await client.send(new ListTablesCommand({}))).TableNames ?? []).not.toContain(TableName);
      } finally {
        client.destroy();
      }
    });
  },
);
