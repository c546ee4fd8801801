// vitest globalSetup: provides `redisCluster` (a 3-master cluster's info and nodes, or null).
import type { TestProject } from "vitest/node";
import { redisClusterSpec } from "../redis.ts";
import { setupServers, type Teardown } from "./setup.ts";

export default async function setup(project: TestProject): Promise<Teardown> {
  return setupServers(project, redisClusterSpec, (servers) =>
    project.provide("redisCluster", servers[0] ?? null),
  );
}
