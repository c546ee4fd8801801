import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** Child processes for the multi-process tests: test/fixtures/worker.mjs on the built package. */
const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const packageDir = join(here, "..");
const worker = join(here, "fixtures", "worker.mjs");

/** The child processes import dist: build it when it is missing or older than src. */
export async function ensureBuilt(): Promise<void> {
  const built = (() => {
    try {
      return statSync(join(packageDir, "dist", "index.js")).mtimeMs;
    } catch {
      return 0;
    }
  })();
  const sources = await readdir(join(packageDir, "src"));
  const newest = Math.max(...sources.map((f) => statSync(join(packageDir, "src", f)).mtimeMs));
  if (built >= newest) return;
  await run(
    process.execPath,
    [join(packageDir, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: packageDir,
    },
  );
}

/**
 * Runs `n` worker processes on the database file in `mode` (see worker.mjs), lined up to start
 * at the same moment; resolves with each one's JSON report.
 */
export function spawnWorkers(
  path: string,
  mode: "claim" | "migrate" | "step" | "save" | "purge",
  n: number,
): Promise<Array<Record<string, unknown>>> {
  const startAt = Date.now() + 700;
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const { stdout } = await run(process.execPath, [worker, path, `proc-${i}`, mode, String(startAt)], {
        timeout: 60_000,
      });
      return JSON.parse(stdout.trim()) as Record<string, unknown>;
    }),
  );
}

/** The fixtures directory (hold-lock.mjs, worker.mjs). */
export const fixtures = join(here, "fixtures");
