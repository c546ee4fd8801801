import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type DynamoDbInfo, uniqueTestName } from "@sayiir/test-servers";
import { afterAll, inject } from "vitest";

export const BIN = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist", "bin.js");

export type Kind = "sqlite" | "redis" | "postgres" | "mongodb" | "dynamodb";
const ALL_KINDS: Kind[] = ["sqlite", "redis", "postgres", "mongodb", "dynamodb"];
/** The backends under test: all, or those named in SAYIIR_CLI_TEST_KINDS (comma-separated). */
export const KINDS: Kind[] = process.env.SAYIIR_CLI_TEST_KINDS
  ? ALL_KINDS.filter((k) => process.env.SAYIIR_CLI_TEST_KINDS?.split(",").includes(k))
  : ALL_KINDS;

const dynamodb: DynamoDbInfo | null = inject("dynamodb");
// The tests seed DynamoDB stores in this process too, through the same default credential chain.
if (dynamodb !== null) {
  process.env.AWS_ACCESS_KEY_ID = dynamodb.credentials.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = dynamodb.credentials.secretAccessKey;
}

/** The environment of every CLI run: the DynamoDB test credentials through the AWS default chain. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (dynamodb !== null) {
    env.AWS_ACCESS_KEY_ID = dynamodb.credentials.accessKeyId;
    env.AWS_SECRET_ACCESS_KEY = dynamodb.credentials.secretAccessKey;
  }
  return env;
}

export const DYNAMODB_TABLE = "sayiir_cli_test";

/** The server URL of a kind, or null when the test tooling could not provide one. */
export function serverUrl(kind: Exclude<Kind, "sqlite">): string | null {
  switch (kind) {
    case "postgres":
      return inject("postgres")[0]?.url ?? null;
    case "redis":
      return inject("redis")?.url ?? null;
    case "mongodb":
      return inject("mongodb")?.url ?? null;
    case "dynamodb":
      return dynamodb?.endpoint ?? null;
  }
}

let tmp: string | undefined;
// Each test file gets its own folder for SQLite stores and checkpoints, removed after its tests.
afterAll(() => {
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
});
function tempDir(): string {
  tmp ??= mkdtempSync(join(tmpdir(), "sayiir-cli-"));
  return tmp;
}

/** A fresh, empty store of that kind (its own file, schema, key prefix or database), as a CLI URL. */
export function freshStoreUrl(kind: Kind): string | null {
  const name = uniqueTestName("cli");
  if (kind === "sqlite") return `sqlite:${join(tempDir(), `${name}.db`)}`;
  const server = serverUrl(kind);
  if (server === null) return null;
  switch (kind) {
    case "postgres": {
      const url = new URL(server);
      url.searchParams.set("schema", name);
      return url.toString();
    }
    case "redis":
      return `${server.replace(/\/$/, "")}?prefix=${name}`;
    case "mongodb": {
      const url = new URL(server);
      url.pathname = `/${name}`;
      url.searchParams.set("prefix", "s_");
      return url.toString();
    }
    case "dynamodb": {
      const info = dynamodb as DynamoDbInfo;
      const endpoint = encodeURIComponent(info.endpoint);
      return `dynamodb://${DYNAMODB_TABLE}?endpoint=${endpoint}&region=${info.region}&prefix=${name}`;
    }
  }
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the built binary as a user would, and collects its output. */
export function cli(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<CliRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: cliEnv(options.env),
      cwd: options.cwd ?? tempDir(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
}

export { tempDir };
