import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { BROKEN } from "./fixtures/broken-backends.js";

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * For each deliberately broken backend (test/fixtures/broken-backends.ts and
 * broken-scheduling.ts), the cases of the kit's control, events and scheduling groups that must
 * fail on it: proof that each group can catch the bug.
 */
const CAUGHT_BY: Record<string, string[]> = {
  "cancel keeps claims": [
    "control > cancel revokes every claim: fenced writes and heartbeats fail, later tokens stay increasing",
  ],
  "cancel keeps events": [
    "events > finished and cancelled workflows refuse events; missing is NotFound; cancel and delete drop them",
  ],
  "pause leaves it discoverable": [
    "control > a paused workflow takes a running task's result but is neither moved on nor discovered",
    "control > resume restores the position with every result that landed meanwhile, and discovery sees it again",
  ],
  "consume unchecked": [
    "events > the fenced write past the wait consumes its event exactly once; events of one name go in order",
  ],
  "send does not wake": [
    "events > an event sent after the wait makes its task ready; an event of another name does not",
    "events > a pending event wins over a passed timeout",
  ],
  "no timers": [
    "events > a timeout makes the wait ready with no event: not before timeoutAt, then timedOut with empty input",
  ],
  "newest event first": [
    "events > the fenced write past the wait consumes its event exactly once; events of one name go in order",
  ],
  "cancel deletes claims": [
    "control > a revoked claim stays a record: its holder may release it, and it never comes back to life",
  ],
  "cancel not final": [
    "control > a cancel is final: no later write but a Cancelled one, and no heartbeat, even on a claim taken after it",
  ],
  "heartbeat ignores cancel": [
    "control > a cancel is final: no later write but a Cancelled one, and no heartbeat, even on a claim taken after it",
  ],
  "control keeps updatedAt": ["control > pause and resume set updatedAt to the store's now"],
  "timed-out claims not kept": [
    "events > a timed-out task that is claimed is not handed out again while the claim lives, and is after it expires",
  ],
  "timer survives pause and cancel": [
    "events > a timed wait leaves discovery while paused or cancelled, and comes back on resume",
  ],
  "resume forgets the timer": [
    "events > a timed wait leaves discovery while paused or cancelled, and comes back on resume",
  ],
  "timers after ready": [
    "events > waits are served in key order with other ready tasks: by updatedAt when an event is pending, by timeoutAt when timed out",
  ],
  "terminal save keeps events": ["events > a terminal saveSnapshot drops the pending events"],
  "hands out before runAt": [
    "scheduling > never hands out a task before its runAt by the store's clock, then does",
  ],
  "ignores priority": [
    "scheduling > serves by effective time readyAt + (priority - 1) x agingMs: a priority-5 task that waited goes first",
  ],
  "no ageing": [
    "scheduling > serves by effective time readyAt + (priority - 1) x agingMs: a priority-5 task that waited goes first",
  ],
  "ignores queues": ["scheduling > queues: a worker gets only the tasks of the queues it serves"],
  "failTasks unfenced": [
    "scheduling > failTasks is fenced: a stale claim is refused and records nothing; missing is NotFound, finished Conflict",
  ],
  "takeover not counted": [
    "scheduling > a takeover after a crash counts as an attempt: the next claim says attempt 2",
  ],
};

interface JsonReport {
  numTotalTests: number;
  testResults: Array<{
    assertionResults: Array<{ ancestorTitles: string[]; title: string; status: string }>;
  }>;
}

/** Runs the broken-backend fixture in a child vitest; its exit code and JSON report. */
async function runFixture(): Promise<{ code: number; report: JsonReport }> {
  const dir = await mkdtemp(join(tmpdir(), "sayiir-memory-can-fail-"));
  const outputFile = join(dir, "report.json");
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("VITEST")));
  const vitest = join(PACKAGE_DIR, "node_modules", ".bin", "vitest");
  const args = [
    "run",
    "--config",
    "test/fixtures/vitest.config.ts",
    "--reporter=json",
    `--outputFile=${outputFile}`,
  ];
  try {
    const code = await new Promise<number>((done, fail) => {
      execFile(vitest, args, { cwd: PACKAGE_DIR, env, maxBuffer: 64 * 1024 * 1024 }, (error) => {
        if (error === null) done(0);
        else if (typeof error.code === "number") done(error.code);
        else fail(error);
      });
    });
    return { code, report: JSON.parse(await readFile(outputFile, "utf8")) as JsonReport };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

it("the control, events and scheduling groups catch each deliberately broken backend", {
  timeout: 240_000,
}, async () => {
  const { code, report } = await runFixture();
  expect(code).toBe(1);
  // Every broken backend ran both groups in full (the suite did not stop early).
  expect(report.numTotalTests).toBeGreaterThanOrEqual(Object.keys(BROKEN).length * 15);
  const failed = new Map<string, string[]>(Object.keys(BROKEN).map((name) => [name, []]));
  for (const file of report.testResults) {
    for (const test of file.assertionResults) {
      if (test.status !== "failed") continue;
      const [bug, group] = test.ancestorTitles;
      failed.get(bug as string)?.push(`${group} > ${test.title}`);
    }
  }
  expect(Object.keys(CAUGHT_BY).sort()).toEqual(Object.keys(BROKEN).sort());
  for (const [bug, cases] of Object.entries(CAUGHT_BY)) {
    const caught = failed.get(bug) ?? [];
    console.info(`broken "${bug}": caught by ${caught.length} case(s):\n  ${caught.join("\n  ")}`);
    expect(caught, bug).toEqual(expect.arrayContaining(cases));
  }
});
