// vitest globalSetup: provides `mongodb` (MongoDbInfo | null; `standIn` is true for mongo-java-server).
import type { TestProject } from "vitest/node";
import { mongodbSpec } from "../mongodb.ts";
import { setupServers, type Teardown } from "./setup.ts";

export default async function setup(project: TestProject): Promise<Teardown> {
  return setupServers(project, mongodbSpec, (servers) => project.provide("mongodb", servers[0] ?? null));
}
