import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

export default defineAdapterConfig({ servers: ["mongodb"], testTimeout: 60_000 });
