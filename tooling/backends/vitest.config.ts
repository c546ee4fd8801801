import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/** A global setup of @sayiir/test-servers (not a dependency here: its source, by path). */
const servers = (kind: "redis" | "postgres") =>
  fileURLToPath(new URL(`../test-servers/src/vitest/${kind}.ts`, import.meta.url));

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The telemetry tests also run on real Redis and PostgreSQL servers.
    globalSetup: [servers("redis"), servers("postgres")],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    reporters: ["default", ["json", { outputFile: "../../.reports/vitest/backends.json" }]],
  },
});
