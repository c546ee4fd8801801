// This package's own smoke tests use the same config as the adapters, with every server.
import { defineAdapterConfig } from "./src/vitest-config.ts";

export default defineAdapterConfig({
  servers: ["redis", "redis-cluster", "postgres", "mongodb", "dynamodb"],
});
