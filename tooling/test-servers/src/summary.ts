// After all tests: one row per package with its passed / failed / skipped counts and the backend
// servers (and versions) it actually ran against, then, as the very last line,
// `tests: N passed, N failed`.
//
//   node tooling/test-servers/src/summary.ts [--allow-missing] [--failed-step NAME ...]
//
// Reads .reports/vitest/<package folder>.json (vitest's JSON reporter, set up by defineAdapterConfig)
// and .reports/servers/<package folder>.<kind>.json (written by the global setups).
// Exit code 1 when a test failed, a test file or run errored, a package with a `test` script wrote no
// report (unless --allow-missing, for CI jobs that test one backend), or no test ran at all.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { REPO_ROOT } from "./config.ts";
import type { ServerRecord } from "./report.ts";

interface VitestJson {
  numPassedTests?: number;
  numFailedTests?: number;
  numPendingTests?: number;
  numTodoTests?: number;
  success?: boolean;
  testResults?: Array<{
    name?: string;
    status?: string;
    message?: string;
    assertionResults?: Array<{ status?: string; fullName?: string; failureMessages?: string[] }>;
  }>;
}

interface PackageInfo {
  folder: string;
  name: string;
  dir: string;
  hasTestScript: boolean;
}

interface Row {
  name: string;
  passed: number;
  failed: number;
  skipped: number;
  servers: string;
  notes: string[];
}

/** Workspace packages under packages/* and tooling/*, keyed by folder name (the report file name). */
function workspacePackages(): Map<string, PackageInfo> {
  const found = new Map<string, PackageInfo>();
  for (const group of ["packages", "tooling"]) {
    const groupDir = join(REPO_ROOT, group);
    if (!existsSync(groupDir)) continue;
    for (const entry of readdirSync(groupDir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const dir = join(groupDir, entry.name);
      const manifest = join(dir, "package.json");
      if (!existsSync(manifest)) continue;
      try {
        const pkg = JSON.parse(readFileSync(manifest, "utf8")) as {
          name?: string;
          scripts?: Record<string, string>;
        };
        found.set(entry.name, {
          folder: entry.name,
          name: pkg.name ?? entry.name,
          dir,
          hasTestScript: typeof pkg.scripts?.test === "string",
        });
      } catch {
        // unreadable package.json: not ours to judge here
      }
    }
  }
  return found;
}

function readJsonFiles<T>(dir: string): Map<string, T> {
  const out = new Map<string, T>();
  if (!existsSync(dir)) return out;
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith(".json")) continue;
    try {
      out.set(file.slice(0, -".json".length), JSON.parse(readFileSync(join(dir, file), "utf8")) as T);
    } catch (error) {
      process.stderr.write(`summary: cannot read ${join(dir, file)}: ${String(error)}\n`);
    }
  }
  return out;
}

function describeServers(records: ServerRecord[]): string {
  return records
    .map((r) =>
      r.source === "unavailable"
        ? `${r.kind}: unavailable (tests skipped)`
        : `${r.kind}: ${r.server} ${r.version} [${r.source}]`,
    )
    .join("; ");
}

function countRow(name: string, report: VitestJson, records: ServerRecord[]): Row {
  const notes: string[] = [];
  let failed = report.numFailedTests ?? 0;
  // A test file that failed without a failing test (import error, failing hook) has no failed
  // assertion to count; count the file itself so it cannot pass silently.
  for (const file of report.testResults ?? []) {
    const failedAssertions = (file.assertionResults ?? []).filter((a) => a.status === "failed").length;
    // CI shows only the tail of the output: name each failed test here, beside its package, so a
    // red run says which test failed and why without the full log.
    for (const a of file.assertionResults ?? []) {
      if (a.status !== "failed") continue;
      const why = (a.failureMessages?.[0] ?? "").split("\n")[0]?.slice(0, 300) ?? "";
      notes.push(`failed: ${relative(REPO_ROOT, file.name ?? "?")} > ${a.fullName ?? "?"}: ${why}`);
    }
    if (file.status === "failed" && failedAssertions === 0) {
      failed++;
      notes.push(
        `file error: ${relative(REPO_ROOT, file.name ?? "?")}: ${(file.message ?? "").split("\n")[0]}`,
      );
    }
  }
  if (report.success === false && failed === 0) {
    failed++;
    notes.push("the run reported errors outside tests (unhandled error or setup failure)");
  }
  return {
    name,
    passed: report.numPassedTests ?? 0,
    failed,
    skipped: (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0),
    servers: describeServers(records),
    notes,
  };
}

function table(rows: Row[]): string {
  const header = ["package", "passed", "failed", "skipped", "servers (version) [source]"];
  const cells = rows.map((r) => [
    r.name,
    String(r.passed),
    String(r.failed),
    String(r.skipped),
    r.servers || "-",
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...cells.map((c) => (i === 4 ? 0 : (c[i] ?? "").length))),
  );
  const line = (c: string[]): string =>
    c
      .map((v, i) => (i === 0 ? v.padEnd(widths[i] ?? 0) : i === 4 ? v : v.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [
    line(header),
    line(header.map((h, i) => (i === 4 ? "-".repeat(h.length) : "-".repeat(widths[i] ?? 0)))),
    ...cells.map(line),
  ].join("\n");
}

function main(): number {
  const allowMissing = process.argv.includes("--allow-missing");
  // Steps before the tests (lint, typecheck) that failed: each counts as one failure in the totals,
  // so the last line never reads "0 failed" for a run that failed.
  const failedSteps = process.argv.flatMap((arg, i) =>
    process.argv[i - 1] === "--failed-step" ? [arg] : [],
  );
  const reportsDir = join(REPO_ROOT, ".reports");
  const packages = workspacePackages();
  const vitestReports = readJsonFiles<VitestJson>(join(reportsDir, "vitest"));
  const serverFiles = readJsonFiles<ServerRecord[] | ServerRecord>(join(reportsDir, "servers"));

  const serversByFolder = new Map<string, ServerRecord[]>();
  for (const [file, content] of serverFiles) {
    const folder = file.split(".")[0] ?? file;
    const list = serversByFolder.get(folder) ?? [];
    list.push(...(Array.isArray(content) ? content : [content]));
    serversByFolder.set(folder, list);
  }

  const rows: Row[] = [];
  for (const [folder, report] of vitestReports) {
    rows.push(countRow(packages.get(folder)?.name ?? folder, report, serversByFolder.get(folder) ?? []));
  }
  rows.sort((a, b) => a.name.localeCompare(b.name));

  const missing = [...packages.values()].filter((p) => p.hasTestScript && !vitestReports.has(p.folder));

  const passed = rows.reduce((n, r) => n + r.passed, 0);
  const failed = rows.reduce((n, r) => n + r.failed, 0) + failedSteps.length;

  console.log(rows.length > 0 ? table(rows) : "(no vitest reports in .reports/vitest)");
  for (const r of rows) for (const note of r.notes) console.log(`  ${r.name}: ${note}`);
  for (const p of missing) {
    console.log(
      `${allowMissing ? "not run here" : "missing report"}: ${p.name} (${relative(REPO_ROOT, p.dir)}) has a test script but wrote no .reports/vitest/${p.folder}.json`,
    );
  }
  const ran = rows.reduce((n, r) => n + r.passed + r.failed, 0);
  if (ran === 0) console.log("no test ran");
  for (const step of failedSteps) console.log(`failed step (counted as one failure): ${step}`);
  console.log(`tests: ${passed} passed, ${failed} failed`);
  return failed > 0 || (missing.length > 0 && !allowMissing) || ran === 0 ? 1 : 0;
}

process.exitCode = main();
