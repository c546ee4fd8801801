// Which servers a package's tests actually ran against, for the summary after all tests:
// `<repo root>/.reports/servers/<package folder name>.<kind>.json`, an array of records (Postgres has
// one per version; an unavailable server is a record with source "unavailable").
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { redact } from "./acquire.ts";
import { REPO_ROOT } from "./config.ts";
import type { ServerInfo, ServerKind, ServerSource } from "./index.ts";

export interface ServerRecord {
  package: string;
  kind: ServerKind;
  server: string;
  version: string;
  source: ServerSource | "unavailable";
  url?: string;
  note?: string;
  recordedAt: string;
}

export function serversReportDir(): string {
  return join(REPO_ROOT, ".reports", "servers");
}

/** The package.json name of the package whose tests run in `packageDir`, else its folder name. */
export function packageName(packageDir: string): string {
  try {
    const name = (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { name?: unknown })
      .name;
    if (typeof name === "string" && name) return name;
  } catch {
    // no package.json: fall back to the folder name
  }
  return basename(packageDir);
}

export function writeServerReport(
  packageDir: string,
  kind: ServerKind,
  servers: ServerInfo[],
  unavailable: string | undefined,
): void {
  const pkg = packageName(packageDir);
  const recordedAt = new Date().toISOString();
  const records: ServerRecord[] = servers.map((s) => ({
    package: pkg,
    kind,
    server: s.server,
    version: s.version,
    source: s.source,
    url: redact(s.url),
    recordedAt,
  }));
  if (records.length === 0) {
    records.push({
      package: pkg,
      kind,
      server: "none",
      version: "",
      source: "unavailable",
      ...(unavailable ? { note: unavailable } : {}),
      recordedAt,
    });
  }
  const dir = serversReportDir();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${basename(packageDir)}.${kind}.json`), `${JSON.stringify(records, null, 2)}\n`);
}
