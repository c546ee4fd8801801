import { defineAdapterConfig } from "@sayiir/test-servers/vitest-config";

// No server to start: the same config as every adapter, so reports land in one place.
export default defineAdapterConfig({ servers: [] });
