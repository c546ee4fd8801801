import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { uniqueTestName } from "@sayiir/test-servers";
import { describe, expect, inject, test } from "vitest";
import { openStore } from "../src/connect.js";
import { BIN, cli, cliEnv, freshStoreUrl, KINDS, type Kind, tempDir } from "./helpers.js";
import { SEEDED, seed } from "./seed.js";

/** A migrated store seeded through the library, as a CLI URL. */
async function seededStore(kind: Kind): Promise<string> {
  const url = freshStoreUrl(kind) as string;
  const migrated = await cli(["migrate", url]);
  expect(migrated.code, migrated.stderr).toBe(0);
  const store = await openStore(url);
  try {
    await seed(store.backend);
  } finally {
    await store.close();
  }
  return url;
}

describe.each(KINDS)("%s", (kind) => {
  test.skipIf(freshStoreUrl(kind) === null)("migrate, inspect, show, purge", async () => {
    const url = await seededStore(kind);

    const again = await cli(["migrate", url]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(kind === "redis" ? /nothing to migrate/ : /already current/);

    const inspected = await cli(["inspect", url, "--json"]);
    expect(inspected.code, inspected.stderr).toBe(0);
    const report = JSON.parse(inspected.stdout);
    expect(report.workflows).toBe(11);
    expect(report.states).toEqual({ InProgress: 7, Paused: 1, Completed: 1, Failed: 1, Cancelled: 1 });
    // ready: wf-ready (billing) and wf-stuck (expired claim); scheduled: runAt and retryAt.
    expect(report.queues.billing).toMatchObject({ ready: 1, scheduled: 0, claimed: 0 });
    expect(report.queues.default).toMatchObject({ ready: 1, scheduled: 2, claimed: 1, waiting: 1 });
    expect(report.stuck.count).toBe(1);
    expect(report.stuck.claims[0]).toMatchObject({
      instanceId: SEEDED.stuck,
      taskId: "ship",
      workerId: "worker-dead",
    });
    expect(report.paused.workflows).toEqual([
      expect.objectContaining({ instanceId: SEEDED.paused, reason: "maintenance" }),
    ]);
    expect(report.pendingEvents).toEqual({ count: 2, workflows: 1 });
    expect(report.oldestReadyAgeMs).toBeGreaterThanOrEqual(0);

    const text = await cli(["inspect", url]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(
      /States\s+InProgress 7 {2}Paused 1 {2}Completed 1 {2}Failed 1 {2}Cancelled 1/,
    );
    expect(text.stdout).toMatch(/Stuck work\s+1 expired claim/);
    expect(text.stdout).toContain("wf-stuck / ship  worker worker-dead");

    const shown = await cli(["show", url, SEEDED.retried]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain("State        InProgress at AtTask charge");
    expect(shown.stdout).toContain('fetch        9 B  226665746368656422  "\\"fetched\\""');
    expect(shown.stdout).toMatch(/charge {2}1 failed run\(s\), last .*"card declined" {2}retry in/);

    const json = await cli(["show", url, SEEDED.claimed, "--json"]);
    expect(json.code, json.stderr).toBe(0);
    const workflow = JSON.parse(json.stdout);
    expect(workflow.claims).toEqual([
      expect.objectContaining({
        taskId: "ship",
        workerId: "worker-a",
        expired: false,
        token: expect.any(Number),
      }),
    ]);
    expect(workflow.state.completedTasks.fetch).toEqual({
      size: 9,
      hex: "226665746368656422",
      utf8: '"fetched"',
    });

    const events = JSON.parse((await cli(["show", url, SEEDED.awaiting, "--json"])).stdout);
    expect(
      events.pendingEvents.map((e: { eventName: string; payload: { utf8: string } }) => e.payload.utf8),
    ).toEqual(["first", "second"]);
    const binary = await cli(["show", url, SEEDED.binary]);
    expect(binary.stdout).toContain("blob      300 B  000102030405060708090a0b0c0d0e0f1011121314151617…\n");

    const missing = await cli(["show", url, "no-such-workflow"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no workflow "no-such-workflow"');

    const none = await cli(["purge", url, "--finished-before", "1h"]);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toMatch(/^Purged 0 workflow/);
    const capped = await cli(["purge", url, "--finished-before", "0s", "--limit", "2"]);
    expect(capped.stdout).toMatch(/^Purged 2 workflow/);
    const rest = await cli(["purge", url, "--finished-before", "0s"]);
    expect(rest.stdout).toMatch(/^Purged 1 workflow/);
    const after = JSON.parse((await cli(["inspect", url, "--json"])).stdout);
    expect(after.states).toEqual({ InProgress: 7, Paused: 1, Completed: 0, Failed: 0, Cancelled: 0 });
  });
});

const cluster = inject("redisCluster");
describe.skipIf(cluster === null || !KINDS.includes("redis"))("Redis Cluster", () => {
  test("a redis+cluster:// URL: inspect, show, and a copy into it that verifies", async () => {
    const source = await seededStore("sqlite");
    const nodes = (cluster?.nodes ?? []).map((n) => `${n.host}:${n.port}`).join(",");
    const target = `redis+cluster://${nodes}?prefix=${uniqueTestName("cli")}`;
    expect((await cli(["migrate", target])).stdout).toContain("nothing to migrate");
    const copied = await cli(["copy", source, target, "--keep-claims"]);
    expect(copied.code, copied.stdout + copied.stderr).toBe(0);
    expect(copied.stdout).toContain("Verified 11 workflows");
    expect(copied.stdout).toContain("all digests match");
    const report = JSON.parse((await cli(["inspect", target, "--json"])).stdout);
    expect(report.states).toEqual({ InProgress: 7, Paused: 1, Completed: 1, Failed: 1, Cancelled: 1 });
    const shown = await cli(["show", target, SEEDED.claimed]);
    expect(shown.stdout).toContain("ship  worker worker-a");
  });
});

describe("usage", () => {
  test("bad usage exits 2 with a hint; --help per command exits 0", async () => {
    const bad = await cli(["purge", "sqlite:x.db", "--finished-before", "soon"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--finished-before must be a duration");
    expect((await cli(["copy", "sqlite:a.db"])).code).toBe(2);
    expect((await cli(["inspect", "sqlite:a.db", "--nope"])).code).toBe(2);
    expect((await cli(["inspect", "ftp://x"])).stderr).toContain("unknown store URL");
    expect((await cli(["frobnicate"])).code).toBe(2);
    expect((await cli([])).code).toBe(2);
    for (const command of ["inspect", "show", "copy", "purge", "migrate"]) {
      const help = await cli([command, "--help"]);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: sayiir-persistence ${command}`);
    }
    expect((await cli(["inspect", "--help"])).stdout).toContain("reads every workflow (a scan");
  });

  test("a missing adapter: exit 1 naming the package to install", async () => {
    // The built CLI alone, beside the core and cli-progress but no adapter (as after
    // `npm install @sayiir/persistence-cli` without peers).
    const root = mkdtempSync(join(tempDir(), "bare-"));
    cpSync(dirname(BIN), join(root, "dist"), { recursive: true });
    writeFileSync(join(root, "package.json"), '{"type":"module"}');
    mkdirSync(join(root, "node_modules", "@sayiir"), { recursive: true });
    const here = dirname(dirname(BIN));
    symlinkSync(
      realpathSync(join(here, "node_modules", "@sayiir", "persistence-core")),
      join(root, "node_modules", "@sayiir", "persistence-core"),
    );
    symlinkSync(
      realpathSync(join(here, "node_modules", "cli-progress")),
      join(root, "node_modules", "cli-progress"),
    );
    const run = await new Promise<{ code: number | null; stderr: string }>((done) => {
      const child = spawn(
        process.execPath,
        [join(root, "dist", "bin.js"), "inspect", "redis://127.0.0.1:1"],
        { cwd: root },
      );
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      child.on("close", (code) => done({ code, stderr }));
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      "this URL needs the adapter @sayiir/persistence-redis: install it beside the CLI (npm install @sayiir/persistence-redis)",
    );
  });

  test("an unmigrated store: exit 1 and the hint to migrate", async () => {
    const run = await cli(["inspect", freshStoreUrl("sqlite") as string]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("sayiir-persistence migrate URL");
  });

  test("inspect --watch redraws in place until stopped", async () => {
    const url = freshStoreUrl("sqlite") as string;
    await cli(["migrate", url]);
    const child = spawn(process.execPath, [BIN, "inspect", url, "--watch", "--interval", "100", "--json"], {
      env: cliEnv(),
      cwd: tempDir(),
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const deadline = Date.now() + 20_000;
    while (out.split("\n").filter(Boolean).length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGINT");
    const reports = out
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(reports[0].workflows).toBe(0);
  });
});

describe.skipIf(freshStoreUrl("postgres") === null)("passwords", () => {
  test("never printed: not in output, not in errors", async () => {
    const server = new URL(freshStoreUrl("postgres") as string);
    const password = decodeURIComponent(server.password);
    const good = await cli(["migrate", server.toString()]);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toContain(":***@");
    expect(good.stdout + good.stderr).not.toContain(password);

    server.password = "Wr0ngSecretPassw0rd";
    const wrong = await cli(["inspect", server.toString()]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr.length).toBeGreaterThan(0);
    expect(wrong.stdout + wrong.stderr).not.toContain("Wr0ngSecretPassw0rd");

    const unreachable = await cli(["inspect", "postgres://admin:S3cretUnreachable@127.0.0.1:1/db"]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).not.toContain("S3cretUnreachable");
    const redis = await cli(["inspect", "redis://:R3disSecret@127.0.0.1:1?prefix=x"]);
    expect(redis.code).toBe(1);
    expect(redis.stdout + redis.stderr).not.toContain("R3disSecret");
  });
});
