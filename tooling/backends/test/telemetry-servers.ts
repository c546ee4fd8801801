// Which backends the telemetry tests run on: the two without a server always, and Redis and
// PostgreSQL when this package's vitest config started them (the test-servers global setups).
import { inject } from "vitest";
import type { BackendName, ServerUrls } from "../src/index.ts";

// What the test-servers global setups provide, as far as these tests read it (this package does
// not depend on @sayiir/test-servers, whose own declaration is the full one).
declare module "vitest" {
  export interface ProvidedContext {
    redis: { url: string } | null;
    postgres: Array<{ url: string }>;
  }
}

export interface TelemetryTarget {
  name: BackendName;
  /** What the adapter declares as capabilities.dbSystem (OpenTelemetry's db.system.name). */
  dbSystem: string;
  urls: ServerUrls;
  /** The passwords of its connection URL (decoded): no exported text may contain them. */
  secrets: string[];
}

export function telemetryTargets(): TelemetryTarget[] {
  const targets: TelemetryTarget[] = [
    { name: "memory", dbSystem: "memory", urls: {}, secrets: [] },
    { name: "sqlite", dbSystem: "sqlite", urls: {}, secrets: [] },
  ];
  const redis = inject("redis")?.url;
  if (redis) targets.push({ name: "redis", dbSystem: "redis", urls: { redis }, secrets: passwords(redis) });
  const postgres = (inject("postgres") ?? [])[0]?.url;
  if (postgres)
    targets.push({
      name: "postgres",
      dbSystem: "postgresql",
      urls: { postgres },
      secrets: passwords(postgres),
    });
  return targets;
}

function passwords(url: string): string[] {
  const password = decodeURIComponent(new URL(url).password);
  return password.length > 0 ? [password] : [];
}
