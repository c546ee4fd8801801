// pnpm --filter @sayiir/persistence-cli bench-copy [-- --workflows N]
//
// Times the built CLI copying a SQLite store of 100,000 workflows into PostgreSQL, then its
// verification pass, and prints both rates. Not part of CI. PostgreSQL comes from the test tooling:
// SAYIIR_TEST_POSTGRES_URL, else a container, else a local server (node tooling/test-servers/src/install.ts postgres).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  createSnapshot,
  markCompleted,
  markTaskCompleted,
  type PersistentBackend,
  updatePosition,
} from "@sayiir/persistence-core";
import { SqliteBackend } from "@sayiir/persistence-sqlite";

const TOOLING = new URL("../../../tooling/test-servers/src/", import.meta.url);
// biome-ignore lint/suspicious/noExplicitAny: the tooling is loaded by path, untyped (as tooling/bench does)
const tooling = (file: string): Promise<any> => import(new URL(file, TOOLING).href);
const BIN = new URL("../dist/bin.js", import.meta.url).pathname;

const { values } = parseArgs({ options: { workflows: { type: "string", default: "100000" } } });
const total = Number(values.workflows);

/** A realistic mix: most in progress with two results, a tenth finished, a twentieth with an event. */
async function fill(backend: PersistentBackend, count: number): Promise<void> {
  const output = new TextEncoder().encode(
    JSON.stringify({ amount: 1234, currency: "EUR", note: "x".repeat(150) }),
  );
  const now = Date.now();
  for (let i = 0; i < count; i++) {
    const id = `order-${String(i).padStart(7, "0")}`;
    let s = createSnapshot(id, "checkout-v3", { initialInput: output, now });
    s = markTaskCompleted(s, "reserve", output, now);
    s = markTaskCompleted(s, "charge", output, now);
    if (i % 10 === 0) s = markCompleted(s, output, now);
    else
      s = updatePosition(s, { kind: "AtTask", taskId: "ship", queue: i % 2 ? "default" : "shipping" }, now);
    await backend.saveSnapshot(s);
    if (i % 20 === 1) await backend.sendEvent(id, "address-changed", output);
  }
}

function run(args: string[]): Promise<{ code: number | null; out: string; seconds: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      process.stdout.write(d);
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out, seconds: (performance.now() - started) / 1000 }));
  });
}

const { obtain } = await tooling("acquire.ts");
const { postgresSpec } = await tooling("postgres.ts");
const { servers } = await obtain(postgresSpec);
const postgres = servers[0];
if (postgres === undefined) throw new Error("no PostgreSQL server: see tooling/test-servers");
const dir = mkdtempSync(join(tmpdir(), "sayiir-bench-copy-"));
try {
  const file = join(dir, "source.db");
  // Filling fast: NORMAL sync (WAL). The copy reads it with the CLI's defaults.
  const source = new SqliteBackend({ path: file, synchronous: "NORMAL" });
  await source.migrate();
  const filled = performance.now();
  await fill(source, total);
  await source.close();
  process.stdout.write(
    `filled ${total} workflows in ${((performance.now() - filled) / 1000).toFixed(1)} s\n`,
  );

  const target = new URL(postgres.info.url);
  target.searchParams.set("schema", `bench_copy_${Date.now().toString(36)}`);
  if ((await run(["migrate", target.toString()])).code !== 0) throw new Error("migrate failed");
  const copy = await run(["copy", `sqlite:${file}`, target.toString(), "--batch", "1000", "--no-verify"]);
  if (copy.code !== 0) throw new Error("copy failed");
  const verify = await run(["copy", `sqlite:${file}`, target.toString(), "--batch", "1000", "--verify-only"]);
  if (verify.code !== 0) throw new Error("verification failed");
  const server = `${postgres.info.server} ${postgres.info.version}`;
  process.stdout.write(
    `\nSQLite -> ${server}: ${total} workflows copied in ${copy.seconds.toFixed(1)} s ` +
      `(${Math.round(total / copy.seconds)} workflows/s, process start included); ` +
      `verified in ${verify.seconds.toFixed(1)} s (${Math.round(total / verify.seconds)} workflows/s)\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
  await Promise.allSettled(servers.map((s: { stop(): Promise<void> }) => s.stop()));
}
