import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createSnapshot, markCompleted } from "@sayiir/persistence-core";
import { beforeAll, describe, expect, test } from "vitest";
import { openStore } from "../src/connect.js";
import { cli, freshStoreUrl, KINDS, type Kind, tempDir } from "./helpers.js";
import { SEEDED, seed } from "./seed.js";

const available = KINDS.filter((kind) => freshStoreUrl(kind) !== null);

async function migrated(kind: Kind): Promise<string> {
  const url = freshStoreUrl(kind) as string;
  const run = await cli(["migrate", url]);
  expect(run.code, run.stderr).toBe(0);
  return url;
}

async function inspect(url: string) {
  const run = await cli(["inspect", url, "--json"]);
  expect(run.code, run.stderr).toBe(0);
  const { states, queues, stuck, paused, pendingEvents } = JSON.parse(run.stdout);
  return { states, queues, stuck: stuck.count, paused: paused.count, pendingEvents };
}

describe("copy between every ordered pair of backends", () => {
  const sources = new Map<Kind, string>();
  beforeAll(async () => {
    await Promise.all(
      available.map(async (kind) => {
        const url = await migrated(kind);
        const store = await openStore(url);
        try {
          await seed(store.backend);
        } finally {
          await store.close();
        }
        sources.set(kind, url);
      }),
    );
  }, 120_000);

  const pairs = available.flatMap((from) => available.filter((to) => to !== from).map((to) => [from, to]));
  test.each(pairs)("%s -> %s", async (from, to) => {
    const source = sources.get(from as Kind) as string;
    const target = await migrated(to as Kind);
    const state = join(tempDir(), `${from}-${to}.checkpoint.json`);
    const run = await cli(["copy", source, target, "--keep-claims", "--batch", "4", "--state", state]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^Copied 11 workflows \(2 events, 1 claims\)/);
    expect(run.stdout).toContain("Verified 11 workflows");
    expect(run.stdout).toContain("all digests match");
    expect(existsSync(state)).toBe(false);
    // The stuck claim (expired) is not copied: on the target its task is simply ready.
    const [before, after] = [await inspect(source), await inspect(target)];
    expect(after.states).toEqual(before.states);
    expect(after.pendingEvents).toEqual(before.pendingEvents);
    expect(after.paused).toBe(1);
    expect(after.stuck).toBe(0);
    expect(after.queues.default).toMatchObject({ claimed: 1, ready: 1, scheduled: 2, waiting: 1 });
    const claimed = JSON.parse((await cli(["show", target, SEEDED.claimed, "--json"])).stdout);
    expect(claimed.claims).toEqual([
      expect.objectContaining({ taskId: "ship", workerId: "worker-a", expired: false }),
    ]);
  });
});

describe("copy safety", () => {
  test.skipIf(!available.includes("postgres"))(
    "refuses a non-empty target unless --force; --verify-only names mismatches, exit 1",
    async () => {
      const source = await migrated("sqlite");
      const target = await migrated("postgres");
      const a = await openStore(source);
      const b = await openStore(target);
      try {
        await a.backend.saveSnapshot(markCompleted(createSnapshot("same", "d"), new Uint8Array([1])));
        await b.backend.saveSnapshot(createSnapshot("other", "d"));
        const refused = await cli(["copy", source, target]);
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain("already holds workflows: add --force");
        const forced = await cli(["copy", source, target, "--force"]);
        expect(forced.code, forced.stderr).toBe(0);
        expect(forced.stdout).toContain("note other: only on target");
        // Changed behind the copy's back: --verify-only compares again and names what differs.
        await b.backend.deleteSnapshot("same");
        await b.backend.saveSnapshot(markCompleted(createSnapshot("same", "d"), new Uint8Array([2])));
        await a.backend.saveSnapshot(createSnapshot("late", "d"));
        const check = await cli(["copy", source, target, "--force", "--verify-only"]);
        expect(check.code).toBe(1);
        expect(check.stdout).toContain("MISMATCH late: missing on target");
        expect(check.stdout).toContain("MISMATCH same: snapshot differ");
        expect(check.stdout).toContain("2 mismatch(es)");
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    },
  );
});

describe.skipIf(!available.includes("postgres"))("resume", () => {
  test("a copy killed mid-way, then --resume, completes and verifies", async () => {
    const source = await migrated("sqlite");
    const target = await migrated("postgres");
    const store = await openStore(source);
    try {
      for (let i = 0; i < 40; i++) {
        const id = `wf-${String(i).padStart(2, "0")}`;
        await store.backend.saveSnapshot(createSnapshot(id, "d", { initialInput: new Uint8Array([i]) }));
        if (i % 3 === 0) {
          await store.backend.sendEvent(id, "go", new Uint8Array([i, 1]));
          await store.backend.sendEvent(id, "go", new Uint8Array([i, 2]));
        }
      }
    } finally {
      await store.close();
    }
    const state = join(tempDir(), "resume.checkpoint.json");
    const args = ["copy", source, target, "--batch", "5", "--concurrency", "3", "--state", state];
    const killed = await cli(args, { env: { SAYIIR_CLI_TEST_KILL_AFTER: "13" } });
    expect(killed.signal).toBe("SIGKILL");
    const checkpoint = JSON.parse(readFileSync(state, "utf8"));
    expect(checkpoint.copied).toBe(10);
    expect(checkpoint.pageIds).toHaveLength(5);

    const fresh = await cli(args);
    expect(fresh.code).toBe(2);
    expect(fresh.stderr).toContain("--resume");

    const resumed = await cli([...args, "--resume"]);
    expect(resumed.code, resumed.stdout + resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain("resuming after 10 workflows; cleared 5");
    expect(resumed.stdout).toMatch(/^Copied 30 workflows \(20 events/);
    expect(resumed.stdout).toContain("40 in all");
    expect(resumed.stdout).toContain("Verified 40 workflows");
    expect(resumed.stdout).toContain("all digests match");
    expect(existsSync(state)).toBe(false);
  });
});
