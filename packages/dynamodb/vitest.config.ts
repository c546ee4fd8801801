import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

export default defineAdapterConfig({ servers: ["dynamodb"], testTimeout: 60_000 });
