// Server URLs from vitest's provided context (the test-servers global setups).

import type { ServerUrls } from "@sayiir/backends";
import type {} from "@sayiir/test-servers";
import { inject } from "vitest";

export function injectedUrls(): ServerUrls {
  const postgres = inject("postgres") ?? [];
  return {
    redis: inject("redis")?.url ?? null,
    postgres: postgres[0]?.url ?? null,
    mongodb: inject("mongodb")?.url ?? null,
    dynamodb: inject("dynamodb")?.endpoint ?? null,
  };
}
