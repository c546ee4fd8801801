import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

export default defineAdapterConfig({ servers: ["redis", "redis-cluster"], testTimeout: 60_000 });
