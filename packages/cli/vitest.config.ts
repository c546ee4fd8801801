import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

// The CLI is tested as a user runs it: the built binary against every real server.
export default defineAdapterConfig({
  servers: ["redis", "redis-cluster", "postgres", "mongodb", "dynamodb"],
  testTimeout: 120_000,
});
