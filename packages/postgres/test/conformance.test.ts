import { runConformance } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, inject, it } from "vitest";
import { closeAdminPools, postgresSubject, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

if (servers.length === 0) {
  it.skip("no PostgreSQL server: set SAYIIR_TEST_POSTGRES_URL or run `node tooling/test-servers/src/install.ts postgres`", () => {});
}

for (const server of servers) {
  runConformance({
    name: serverName(server),
    capabilities: { durable: true, rawRecords: true },
    setup: (options) => postgresSubject(server.url, options),
  });
}
