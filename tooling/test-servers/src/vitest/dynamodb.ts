// vitest globalSetup: provides `dynamodb` (DynamoDbInfo | null: endpoint, region, fake credentials).
import type { TestProject } from "vitest/node";
import { dynamodbSpec } from "../dynamodb.ts";
import { setupServers, type Teardown } from "./setup.ts";

export default async function setup(project: TestProject): Promise<Teardown> {
  return setupServers(project, dynamodbSpec, (servers) => project.provide("dynamodb", servers[0] ?? null));
}
