import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

export default defineAdapterConfig({ servers: ["postgres"], testTimeout: 60_000 });
