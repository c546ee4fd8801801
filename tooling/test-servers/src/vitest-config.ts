// `defineAdapterConfig`: the vitest config every adapter package uses.
// Self-contained on purpose (no relative value imports), like index.ts: adapters may type-check
// their vitest.config.ts, whose program then includes this file.
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type ViteUserConfig } from "vitest/config";

export type AdapterServer = "redis" | "redis-cluster" | "postgres" | "mongodb" | "dynamodb";

export interface AdapterConfigOptions {
  /** Servers to start before the tests (each one a global setup; they `provide` what tests `inject`). */
  servers: AdapterServer[];
  /** Per-test timeout in ms (default 30000). */
  testTimeout?: number;
  /** The package folder (default: the working directory, where `pnpm test` runs vitest). */
  root?: string;
}

const SRC_DIR = dirname(fileURLToPath(import.meta.url));
/** The monorepo root, from this file's location: tooling/test-servers/src -> ../../.. */
const REPO_ROOT = resolve(SRC_DIR, "..", "..", "..");

export function defineAdapterConfig(options: AdapterConfigOptions): ViteUserConfig {
  const packageDir = resolve(options.root ?? process.cwd());
  const unique = [...new Set(options.servers)];
  return defineConfig({
    test: {
      root: packageDir,
      globalSetup: unique.map((kind) => join(SRC_DIR, "vitest", `${kind}.ts`)),
      testTimeout: options.testTimeout ?? 30_000,
      hookTimeout: 60_000,
      // Servers are stopped in the global teardown; give it time even after a slow run.
      teardownTimeout: 30_000,
      reporters: [
        "default",
        ["json", { outputFile: join(REPO_ROOT, ".reports", "vitest", `${basename(packageDir)}.json`) }],
      ],
    },
  });
}
