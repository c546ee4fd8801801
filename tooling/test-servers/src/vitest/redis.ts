// vitest globalSetup: provides `redis` (ServerInfo | null).
import type { TestProject } from "vitest/node";
import { redisSpec } from "../redis.ts";
import { setupServers, type Teardown } from "./setup.ts";

export default async function setup(project: TestProject): Promise<Teardown> {
  return setupServers(project, redisSpec, (servers) => project.provide("redis", servers[0] ?? null));
}
