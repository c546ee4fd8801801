// @sayiir/persistence-core/telemetry against real backends from the registry: the spans, their
// attributes and outcomes, the counters, and what must never be exported (payload bytes,
// passwords). The module-graph test at the end checks that the main entry loads no OpenTelemetry.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import type { PersistentBackend, TaskClaim } from "@sayiir/persistence-core";
import { atTask, claimOrFail, expectCode, text, uid } from "@sayiir/persistence-core/conformance";
import { ATTR, INSTRUMENTATION_NAME, instrument, METRIC } from "@sayiir/persistence-core/telemetry";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type BackendName, createRegistry, type Subject } from "../src/index.ts";
import { TestTelemetry } from "./telemetry-harness.ts";
import { telemetryTargets } from "./telemetry-servers.ts";

/** Every operation of PersistentBackend; the type check below fails if one is added and not listed. */
const OPERATIONS = [
  "saveSnapshot",
  "saveTaskResult",
  "loadSnapshot",
  "deleteSnapshot",
  "loadTaskResult",
  "purgeFinished",
  "loadTaskClaims",
  "listSnapshots",
  "listSnapshotsPage",
  "claimTask",
  "releaseTaskClaim",
  "extendTaskClaim",
  "findAvailableTasks",
  "claimAvailableTasks",
  "completeTasks",
  "failTasks",
  "cancelWorkflow",
  "pauseWorkflow",
  "resumeWorkflow",
  "sendEvent",
  "loadPendingEvents",
  "waitForTasks",
] as const;
type Operation = Exclude<keyof PersistentBackend, "capabilities" | "close" | typeof Symbol.asyncDispose>;
const everyOperationListed: [Exclude<Operation, (typeof OPERATIONS)[number]>] extends [never] ? true : false =
  true;

// Markers in every payload: no exported text may contain them (nor their bytes as a number list).
const OUTPUT = "OUTPUT-7c1e-never-exported";
const INPUT = "INPUT-52aa-never-exported";
const EVENT = "EVENT-93d0-never-exported";
const FINAL = "FINAL-0b4f-never-exported";
const ERROR_TEXT = "ERROR-e61c-never-exported";
const REASON = "REASON-4417-never-exported";
const MARKERS = [OUTPUT, INPUT, EVENT, FINAL, ERROR_TEXT, REASON];

const NAMESPACE = "telemetry_ns";
const registry = createRegistry({ prefix: "telemetry_test" });

for (const target of telemetryTargets()) {
  describe(`telemetry over ${target.name}`, () => {
    // A fresh SDK per test: metrics are cumulative.
    let telemetry: TestTelemetry;
    let subject: Subject;
    let backend: PersistentBackend;

    beforeEach(async () => {
      telemetry = new TestTelemetry();
      subject = await registry[target.name as BackendName].create(target.urls, { tag: "otel" });
      backend = instrument(subject.backend, {
        tracer: telemetry.tracer,
        meter: telemetry.meter,
        namespace: NAMESPACE,
      });
    });

    afterEach(async () => {
      await backend.close();
      await subject.cleanup();
      await telemetry.shutdown();
    });

    it("passes the capabilities through, and every operation is one CLIENT span with the db attributes", async () => {
      expect(everyOperationListed).toBe(true);
      expect(backend.capabilities).toEqual(subject.backend.capabilities);
      const dbSystem = subject.backend.capabilities.dbSystem;
      expect(dbSystem).toBe(target.dbSystem);
      await everyOperation(backend);
      for (const operation of OPERATIONS) {
        const spans = telemetry.named(operation);
        expect(spans.length, operation).toBeGreaterThan(0);
        for (const span of spans) {
          expect(span.kind, operation).toBe(SpanKind.CLIENT);
          expect(span.instrumentationScope.name).toBe("telemetry-test");
          expect(span.attributes).toMatchObject({
            [ATTR.dbSystem]: dbSystem,
            [ATTR.dbOperation]: operation,
            [ATTR.dbNamespace]: NAMESPACE,
          });
        }
      }
      expect(telemetry.spans().every((s) => s.status.code === SpanStatusCode.OK)).toBe(true);
      await expectNothingSecret(telemetry, target.secrets);
    });

    it("a claim / complete / event / fail / cancel sequence: its spans, attributes and counters", async () => {
      const id = uid("otel");
      await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(INPUT) }));
      const [first] = await backend.claimAvailableTasks("w1", 10, 60_000);
      expect(first?.taskId).toBe("t1");
      const claim = (first as { claim: TaskClaim }).claim;
      const next = { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t2", timeoutAt: null } as const;
      expect(await backend.completeTasks([{ claim, output: text(OUTPUT), next }])).toEqual([null]);
      const sequence = await backend.sendEvent(id, "go", text(EVENT));
      const [second] = await backend.claimAvailableTasks("w1", 10, 60_000);
      expect(second?.taskId).toBe("t2");
      const failure = { claim: (second as { claim: TaskClaim }).claim, error: ERROR_TEXT, retryAt: null };
      expect(await backend.failTasks([failure])).toEqual([null]);
      const third = await claimOrFail(backend, id, "t2", "w2", 60_000);
      await backend.cancelWorkflow(id, { reason: REASON, requestedBy: REASON });
      expect(await backend.waitForTasks({ timeoutMs: 0 })).toBe("timeout");

      expect(telemetry.named("claimAvailableTasks")[0]?.attributes).toMatchObject({
        [ATTR.workerId]: "w1",
        [ATTR.limit]: 10,
        [ATTR.claimTtlMs]: 60_000,
        [ATTR.resultCount]: 1,
        [ATTR.instanceId]: id,
        [ATTR.taskId]: "t1",
        [ATTR.claimTokens]: [claim.token],
      });
      expect(telemetry.only("completeTasks").attributes).toMatchObject({
        [ATTR.batchSize]: 1,
        [ATTR.instanceId]: id,
        [ATTR.taskId]: "t1",
        [ATTR.workerId]: "w1",
        [ATTR.claimTokens]: [claim.token],
        [ATTR.nextStep]: "AwaitingEvent",
        [ATTR.batchAccepted]: 1,
        [ATTR.batchRefused]: 0,
      });
      expect(telemetry.only("completeTasks").attributes).not.toHaveProperty(ATTR.dbBatchSize);
      expect(telemetry.only("sendEvent").attributes).toMatchObject({
        [ATTR.instanceId]: id,
        [ATTR.eventName]: "go",
        [ATTR.eventSequence]: sequence,
      });
      expect(telemetry.only("failTasks").attributes).toMatchObject({
        [ATTR.batchSize]: 1,
        [ATTR.taskId]: "t2",
        [ATTR.batchAccepted]: 1,
      });
      expect(telemetry.only("claimTask").attributes).toMatchObject({
        [ATTR.instanceId]: id,
        [ATTR.taskId]: "t2",
        [ATTR.workerId]: "w2",
        [ATTR.claimAcquired]: true,
        [ATTR.claimToken]: third.token,
      });
      expect(telemetry.only("cancelWorkflow").attributes).toMatchObject({ [ATTR.instanceId]: id });
      expect(telemetry.only("waitForTasks").attributes).toMatchObject({
        [ATTR.timeoutMs]: 0,
        [ATTR.wakeReason]: "timeout",
      });
      expect(telemetry.spans().every((s) => s.status.code === SpanStatusCode.OK)).toBe(true);

      const system = { [ATTR.dbSystem]: target.dbSystem };
      expect(
        await telemetry.total(METRIC.claims, { ...system, [ATTR.dbOperation]: "claimAvailableTasks" }),
      ).toBe(2);
      expect(await telemetry.total(METRIC.claims, { ...system, [ATTR.dbOperation]: "claimTask" })).toBe(1);
      expect(await telemetry.total(METRIC.completions, system)).toBe(1);
      expect(await telemetry.total(METRIC.failures, system)).toBe(1);
      expect(await telemetry.total(METRIC.wakeUps, { ...system, [ATTR.wakeReason]: "timeout" })).toBe(1);
      expect(await telemetry.total(METRIC.refusals)).toBe(0);
      // The duration histogram counts every operation but the wait.
      expect(await telemetry.total(METRIC.duration, { [ATTR.dbOperation]: "completeTasks" })).toBe(1);
      expect(await telemetry.total(METRIC.duration, { [ATTR.dbOperation]: "waitForTasks" })).toBe(0);
      await expectNothingSecret(telemetry, target.secrets);
    });

    it("a stale token: the batch item is a refusal (span OK), the fenced write an error CLAIM_LOST", async () => {
      const id = uid("stale");
      await backend.saveSnapshot(atTask(id, "t1"));
      const stale = await claimOrFail(backend, id, "t1", "w1", 60_000);
      await backend.releaseTaskClaim(id, "t1", "w1");
      const live = await claimOrFail(backend, id, "t1", "w2", 60_000);
      expect(live.token).toBeGreaterThan(stale.token);

      // The stale claim, and the live one pointed at an instance that does not exist.
      const missing = uid("missing");
      const outcomes = await backend.completeTasks([
        { claim: stale, output: text(OUTPUT) },
        { claim: { ...live, instanceId: missing }, output: text(OUTPUT) },
      ]);
      expect(outcomes).toMatchObject([{ code: "CLAIM_LOST" }, { code: "NOT_FOUND" }]);
      const batch = telemetry.only("completeTasks");
      expect(batch.status.code).toBe(SpanStatusCode.OK);
      expect(batch.attributes).not.toHaveProperty(ATTR.errorType);
      expect(batch.attributes).not.toHaveProperty(ATTR.workerId); // w1 and w2
      expect(batch.attributes).toMatchObject({
        [ATTR.batchSize]: 2,
        [ATTR.dbBatchSize]: 2,
        [ATTR.instanceIds]: [id, missing],
        [ATTR.taskId]: "t1",
        [ATTR.claimTokens]: [stale.token, live.token],
        [ATTR.batchAccepted]: 0,
        [ATTR.batchRefused]: 2,
        [`${ATTR.batchRefused}.claim_lost`]: 1,
        [`${ATTR.batchRefused}.not_found`]: 1,
      });

      await expectCode(backend.saveTaskResult(id, "t1", text(OUTPUT), { claim: stale.token }), "CLAIM_LOST");
      const write = telemetry.only("saveTaskResult");
      expect(write.status).toEqual({ code: SpanStatusCode.ERROR, message: "CLAIM_LOST" });
      expect(write.attributes).toMatchObject({
        [ATTR.errorType]: "CLAIM_LOST",
        [ATTR.instanceId]: id,
        [ATTR.taskId]: "t1",
        [ATTR.claimToken]: stale.token,
      });

      const refusal = { [ATTR.dbSystem]: target.dbSystem, [ATTR.errorType]: "CLAIM_LOST" };
      expect(
        await telemetry.total(METRIC.refusals, { ...refusal, [ATTR.dbOperation]: "completeTasks" }),
      ).toBe(1);
      expect(
        await telemetry.total(METRIC.refusals, { ...refusal, [ATTR.dbOperation]: "saveTaskResult" }),
      ).toBe(1);
      const notFound = { [ATTR.dbOperation]: "completeTasks", [ATTR.errorType]: "NOT_FOUND" };
      expect(await telemetry.total(METRIC.refusals, notFound)).toBe(1);
      expect(await telemetry.total(METRIC.completions)).toBe(0);
      expect(
        await telemetry.total(METRIC.duration, {
          [ATTR.dbOperation]: "saveTaskResult",
          [ATTR.errorType]: "CLAIM_LOST",
        }),
      ).toBe(1);
      await expectNothingSecret(telemetry, target.secrets);
    });

    it("a validation error is a span with error.type VALIDATION and a refusal; nothing else is taken from bad input", async () => {
      await expectCode(backend.claimTask("", "t1", "w1", 1000), "VALIDATION");
      expect(telemetry.only("claimTask").status.code).toBe(SpanStatusCode.ERROR);
      expect(telemetry.only("claimTask").attributes).toMatchObject({
        [ATTR.errorType]: "VALIDATION",
        [ATTR.instanceId]: "",
        [ATTR.workerId]: "w1",
        [ATTR.dbSystem]: target.dbSystem,
      });
      // Items that are not completions at all: the span keeps only what is a plain id or number.
      const bad = [{ claim: { instanceId: { nested: OUTPUT }, token: "7" }, output: OUTPUT }];
      await expectCode(backend.completeTasks(bad as never), "VALIDATION");
      const batch = telemetry.only("completeTasks");
      expect(batch.attributes).toMatchObject({ [ATTR.errorType]: "VALIDATION", [ATTR.batchSize]: 1 });
      expect(batch.attributes).not.toHaveProperty(ATTR.instanceId);
      expect(batch.attributes).not.toHaveProperty(ATTR.claimTokens);
      expect(
        await telemetry.total(METRIC.refusals, {
          [ATTR.dbOperation]: "claimTask",
          [ATTR.errorType]: "VALIDATION",
        }),
      ).toBe(1);
      await expectNothingSecret(telemetry, target.secrets);
    });
  });
}

/** Calls every operation once (successfully), the payloads carrying the markers. */
async function everyOperation(backend: PersistentBackend): Promise<void> {
  const id = uid("all");
  await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(INPUT) }));
  await backend.saveTaskResult(id, "t0", text(OUTPUT));
  await backend.loadSnapshot(id);
  expect(await backend.loadTaskResult(id, "t0")).toEqual(text(OUTPUT));
  await backend.listSnapshots();
  await backend.listSnapshotsPage({ limit: 10 });
  expect(await backend.findAvailableTasks("w1", 10)).toHaveLength(1);
  expect(await backend.waitForTasks({ timeoutMs: 0 })).toBe("ready");
  const claim = await claimOrFail(backend, id, "t1", "w1", 60_000);
  await backend.extendTaskClaim(id, "t1", "w1", 60_000);
  expect(await backend.loadTaskClaims(id)).toHaveLength(1);
  await backend.releaseTaskClaim(id, "t1", "w1");
  const [claimed] = await backend.claimAvailableTasks("w1", 1, 60_000);
  expect(claimed?.claim.token).toBeGreaterThan(claim.token);
  const failed = { claim: (claimed as { claim: TaskClaim }).claim, error: ERROR_TEXT, retryAt: null };
  expect(await backend.failTasks([failed])).toEqual([null]);
  await backend.pauseWorkflow(id, { reason: REASON });
  await backend.resumeWorkflow(id);
  await backend.sendEvent(id, "go", text(EVENT));
  await backend.loadPendingEvents(id);
  const again = await claimOrFail(backend, id, "t1", "w1", 60_000);
  const done = { kind: "Completed", finalOutput: text(FINAL) } as const;
  expect(await backend.completeTasks([{ claim: again, output: text(OUTPUT), next: done }])).toEqual([null]);
  expect(await backend.purgeFinished({ finishedBefore: Date.now() + 3_600_000, limit: 10 })).toBe(1);
  const other = uid("del");
  await backend.saveSnapshot(atTask(other, "t1"));
  await backend.cancelWorkflow(other, { reason: REASON });
  await backend.deleteSnapshot(other);
}

/** No exported text contains a payload marker, or any of `secrets`. */
async function expectNothingSecret(telemetry: TestTelemetry, secrets: readonly string[]): Promise<void> {
  const exported = await telemetry.exportedTexts();
  expect(exported.length).toBeGreaterThan(0);
  for (const needle of [...MARKERS, ...secrets]) {
    expect(exported.filter((t) => t.includes(needle))).toEqual([]);
  }
}

describe("what is never exported", () => {
  it("a password of a connection URL: not on the spans of a backend that cannot connect", async () => {
    const telemetry = new TestTelemetry();
    const password = "pw-3f9b-never-exported";
    const url = `postgres://sayiir:${password}@127.0.0.1:1/sayiir`;
    const raw = await registry.postgres.open(
      { backend: "postgres", url, storage: "telemetry_nowhere" },
      { timeoutMs: 2000, poolSize: 1 },
    );
    const backend = instrument(raw, {
      tracer: telemetry.tracer,
      meter: telemetry.meter,
      namespace: "sayiir",
    });
    try {
      await expectCode(backend.loadSnapshot("x"), "BACKEND");
      expect(telemetry.only("loadSnapshot").attributes).toMatchObject({
        [ATTR.errorType]: "BACKEND",
        [ATTR.dbOperation]: "loadSnapshot",
      });
      await expectNothingSecret(telemetry, [password, url]);
    } finally {
      await backend.close();
      await telemetry.shutdown();
    }
  });
});

describe("the main entry pays nothing", () => {
  // A child process records every module resolved under @opentelemetry/ while it imports an
  // entry point: the main entry and the adapter kit import none; /telemetry does (the control
  // that shows the hook sees it).
  const probe = (entry: string): string[] => {
    const script = `
      import { registerHooks } from "node:module";
      const seen = [];
      registerHooks({ resolve(specifier, context, next) {
        if (specifier.startsWith("@opentelemetry/")) seen.push(specifier);
        return next(specifier, context);
      } });
      await import(${JSON.stringify(entry)});
      console.log(JSON.stringify(seen));`;
    const cwd = fileURLToPath(new URL("..", import.meta.url));
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      cwd,
      encoding: "utf8",
    });
    return JSON.parse(out.trim().split("\n").pop() ?? "[]") as string[];
  };

  it("importing @sayiir/persistence-core (or /adapter, or an adapter) loads no @opentelemetry module", () => {
    expect(probe("@sayiir/persistence-core")).toEqual([]);
    expect(probe("@sayiir/persistence-core/adapter")).toEqual([]);
    expect(probe("@sayiir/persistence-memory")).toEqual([]);
    expect(probe("@sayiir/persistence-core/telemetry")).toContain("@opentelemetry/api");
  });
});

describe("defaults", () => {
  it("without a tracer or meter: the global ones, scope named after the package with its version", async () => {
    const telemetry = new TestTelemetry();
    const subject = await registry.memory.create({});
    // Instrumented before the SDK is registered: the meter is looked up at the first operation.
    const backend = instrument(subject.backend);
    const undo = telemetry.registerGlobally();
    try {
      await backend.saveSnapshot(atTask("d-1", "t1"));
      expect(await backend.claimAvailableTasks("w1", 1, 1000)).toHaveLength(1);
      const span = telemetry.only("claimAvailableTasks");
      const version = createRequire(import.meta.url)("@sayiir/persistence-core/package.json").version;
      expect(span.instrumentationScope).toMatchObject({ name: INSTRUMENTATION_NAME, version });
      expect(span.attributes).not.toHaveProperty(ATTR.dbNamespace);
      expect(await telemetry.total(METRIC.claims, { [ATTR.dbSystem]: "memory" })).toBe(1);
    } finally {
      undo();
      await backend.close();
      await telemetry.shutdown();
    }
  });
});
