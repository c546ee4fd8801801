import { describe, expect, it } from "vitest";
import { bytesEqual } from "../../bytes.js";
import type { WorkflowSnapshot } from "../../snapshot.js";
import { atTask } from "../fixtures.js";
import { patternBytes, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const MiB = 1024 * 1024;

function expectOutputs(snapshot: WorkflowSnapshot, expected: Record<string, Uint8Array>): void {
  expect(snapshot.state.kind).toBe("InProgress");
  if (snapshot.state.kind !== "InProgress") return;
  expect(Object.keys(snapshot.state.completedTasks).sort()).toEqual(Object.keys(expected).sort());
  for (const [taskId, bytes] of Object.entries(expected)) {
    const got = snapshot.state.completedTasks[taskId]?.output;
    expect(got && bytesEqual(got, bytes), `output of ${taskId} (${bytes.byteLength} bytes)`).toBe(true);
  }
}

export function sizesGroup(options: ConformanceOptions): void {
  const timeout = options.slowTestTimeoutMs ?? 120_000;
  describe("sizes", () => {
    it(
      "a 5 MiB task output round-trips through saveTaskResult and saveSnapshot",
      async () => {
        const { backend } = await useSubject(options);
        const id = uid();
        const big = patternBytes(5 * MiB, 11);
        await backend.saveSnapshot(atTask(id, "t1", { initialInput: patternBytes(5 * MiB, 12) }));
        await backend.saveTaskResult(id, "t1", big);
        const loaded = await backend.loadSnapshot(id);
        expectOutputs(loaded, { t1: big });
        expect(loaded.initialInput && bytesEqual(loaded.initialInput, patternBytes(5 * MiB, 12))).toBe(true);
        const viaSnapshot = uid();
        await backend.saveSnapshot(atTask(viaSnapshot, "t2", { completed: { t1: big } }));
        expectOutputs(await backend.loadSnapshot(viaSnapshot), { t1: big });
        const found = await backend.findAvailableTasks("w", 10);
        const input = found.find((t) => t.instanceId === viaSnapshot)?.input;
        expect(input && bytesEqual(input, big)).toBe(true);
      },
      timeout,
    );

    it(
      "a snapshot whose outputs total 40 MiB saves and loads exactly",
      async () => {
        const { backend } = await useSubject(options);
        const id = uid();
        const outputs: Record<string, Uint8Array> = {};
        for (let i = 0; i < 8; i++) outputs[`task-${i}`] = patternBytes(5 * MiB, 100 + i);
        await backend.saveSnapshot(atTask(id, "task-9", { completed: outputs, last: "task-7" }));
        expectOutputs(await backend.loadSnapshot(id), outputs);
        // The same total reached one result at a time.
        const stepwise = uid();
        await backend.saveSnapshot(atTask(stepwise, "task-9"));
        for (const [taskId, bytes] of Object.entries(outputs))
          await backend.saveTaskResult(stepwise, taskId, bytes);
        expectOutputs(await backend.loadSnapshot(stepwise), outputs);
      },
      timeout,
    );

    it(
      "many small outputs (2,000 tasks) round-trip",
      async () => {
        const { backend } = await useSubject(options);
        const id = uid();
        const outputs: Record<string, Uint8Array> = {};
        for (let i = 0; i < 2000; i++) outputs[`t-${i}`] = patternBytes(i % 64, i);
        await backend.saveSnapshot(atTask(id, "next", { completed: outputs, last: "t-1999" }));
        expectOutputs(await backend.loadSnapshot(id), outputs);
      },
      timeout,
    );
  });
}
