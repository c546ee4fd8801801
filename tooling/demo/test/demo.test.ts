import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type {} from "@sayiir/test-servers";
import { describe, expect, inject, it } from "vitest";

// The demo, end to end, as a user runs it: the coordinator spawns worker processes, SIGKILLs one
// midway, cancels, pauses/resumes and feeds approvals to workflows, and exits non-zero if any of
// its checks fails. Once on the SQLite default, then short
// runs on every server backend the test tooling provides.
const main = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "main.ts");

function runDemo(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output }));
  });
}

async function expectDemoPasses(args: string[]): Promise<void> {
  const { code, output } = await runDemo(args);
  expect(output, output).toContain("All checks passed");
  expect(code, output).toBe(0);
  expect(output).toMatch(/SIGKILL/);
  // The controller's part ran and was checked: cancel, pause/resume, approvals, a timeout.
  expect(output).toMatch(/✓ cancelled \S+ ended Cancelled and never advanced after the cancel/);
  expect(output).toMatch(/✓ paused \S+ did not advance while paused .* completed after resume/);
  expect(output).toMatch(/✓ \d+ approvals .* each consumed exactly once .* continued with its payload/);
  expect(output).toMatch(/✓ unanswered \S+ timed out and ran its timeout path/);
  // Scheduling: retries with backoff, a durable sleep, a priority, a second queue.
  // Attempt 3 unless the SIGKILLed worker held the retried task then: its takeover is one more
  // attempt, and the demo's own check accounts for it ("the store counts 3 failed runs (1 takeover)").
  expect(output).toMatch(/✓ retried \S+: charge failed on attempts 1 and 2 .* succeeded on attempt [34]\b/);
  expect(output).toMatch(/✓ durable sleep in \S+: "after" was first claimed \d+ ms after its runAt/);
  expect(output).toMatch(/✓ high-priority \S+ \(priority 1\), started after a backlog of \d+ workflows/);
  expect(output).toMatch(
    /✓ queue "gpu": \d+ render tasks .* ran on the dedicated worker-gpu, none on a default worker/,
  );
  // Wake-ups: workflows saved while every worker waited were claimed within the backend's bound.
  expect(output).toMatch(
    /✓ idle workers woke: 3 workflows saved while every worker waited were first claimed/,
  );
}

const namespace = () => `demo_${randomBytes(4).toString("hex")}`;
const redis = inject("redis");
const postgres = inject("postgres")[0];
const mongodb = inject("mongodb");
const dynamodb = inject("dynamodb");

describe("./dev demo", () => {
  it("passes its checks on the SQLite default", async () => {
    await expectDemoPasses(["--workflows", "120"]);
  });

  const servers: Array<[string, string | undefined]> = [
    ["redis", redis?.url],
    ["postgres", postgres?.url],
    ["mongo", mongodb?.url],
    ["dynamodb", dynamodb?.endpoint],
  ];
  for (const [backend, url] of servers) {
    it.skipIf(url === undefined)(`passes its checks with --backend ${backend}`, async () => {
      await expectDemoPasses([
        "--backend",
        backend,
        "--url",
        url ?? "",
        "--namespace",
        namespace(),
        "--workflows",
        "40",
      ]);
    });
  }
});
