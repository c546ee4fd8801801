// vitest globalSetup: provides `postgres` (one ServerInfo per PostgreSQL version; empty when none).
import type { TestProject } from "vitest/node";
import { postgresSpec } from "../postgres.ts";
import { setupServers, type Teardown } from "./setup.ts";

export default async function setup(project: TestProject): Promise<Teardown> {
  return setupServers(project, postgresSpec, (servers) => project.provide("postgres", servers));
}
