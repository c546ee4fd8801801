// The instrumentation scope: this package's name and version, read from its package.json (two
// levels up from both src/telemetry and dist/telemetry) so that it never drifts from a release.
import { createRequire } from "node:module";

export const INSTRUMENTATION_NAME = "@sayiir/persistence-core";

function packageVersion(): string | undefined {
  try {
    const manifest: unknown = createRequire(import.meta.url)("../../package.json");
    const version = (manifest as { version?: unknown }).version;
    return typeof version === "string" ? version : undefined;
  } catch {
    // Bundled without its package.json: the scope simply has no version.
    return undefined;
  }
}

export const INSTRUMENTATION_VERSION = packageVersion();
