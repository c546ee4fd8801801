import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

export default defineAdapterConfig({
  servers: ["redis", "redis-cluster", "postgres", "mongodb", "dynamodb"],
  testTimeout: 120_000,
});
