import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

export default defineAdapterConfig({
  servers: ["redis", "postgres", "mongodb", "dynamodb"],
  testTimeout: 120_000,
});
