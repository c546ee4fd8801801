// The counters and the duration histogram. Their attributes are few and bounded (database,
// namespace, operation, error code, wake reason): never an id, which would make one time series
// per workflow.
import type { Attributes, Counter, Histogram, Meter } from "@opentelemetry/api";
import type { CompletionOutcome } from "../backend.js";
import { ErrorCode } from "../errors.js";
import { ATTR } from "./attributes.js";

/** Metric names, as the README lists them. */
export const METRIC = {
  claims: "sayiir.persistence.tasks.claimed",
  completions: "sayiir.persistence.tasks.completed",
  failures: "sayiir.persistence.tasks.failed",
  refusals: "sayiir.persistence.refusals",
  wakeUps: "sayiir.persistence.wake_ups",
  duration: "db.client.operation.duration",
} as const;

/**
 * The store said no and nothing changed: these codes count as refusals. BACKEND and SERIALIZATION
 * are failures of the store itself; they show on the spans and in the duration's error.type.
 */
const REFUSAL_CODES: ReadonlySet<string> = new Set([
  ErrorCode.ClaimLost,
  ErrorCode.Conflict,
  ErrorCode.NotFound,
  ErrorCode.Validation,
  ErrorCode.PayloadTooLarge,
]);

/** OpenTelemetry's advised buckets for db.client.operation.duration, in seconds. */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

export class Instruments {
  readonly #base: Attributes;
  readonly #claims: Counter;
  readonly #completions: Counter;
  readonly #failures: Counter;
  readonly #refusals: Counter;
  readonly #wakeUps: Counter;
  readonly #duration: Histogram;

  /** `base`: db.system.name and db.namespace, on every measurement. */
  constructor(meter: Meter, base: Attributes) {
    this.#base = base;
    this.#claims = meter.createCounter(METRIC.claims, {
      description: "Tasks claimed (claimTask, claimAvailableTasks)",
      unit: "{task}",
    });
    this.#completions = meter.createCounter(METRIC.completions, {
      description: "Task results stored and claims released by completeTasks",
      unit: "{task}",
    });
    this.#failures = meter.createCounter(METRIC.failures, {
      description: "Failed runs recorded by failTasks",
      unit: "{task}",
    });
    this.#refusals = meter.createCounter(METRIC.refusals, {
      description: "Operations and batch items the store refused, by error code",
      unit: "{refusal}",
    });
    this.#wakeUps = meter.createCounter(METRIC.wakeUps, {
      description: "Ends of waitForTasks, by reason",
      unit: "{wake_up}",
    });
    this.#duration = meter.createHistogram(METRIC.duration, {
      description: "Duration of the backend's operations (waitForTasks excluded: it waits on purpose)",
      unit: "s",
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
  }

  claimed(operation: string, count: number): void {
    if (count > 0) this.#claims.add(count, { ...this.#base, [ATTR.dbOperation]: operation });
  }

  /** One batch's outcomes: accepted items are completions (or failures), the others refusals. */
  settled(operation: "completeTasks" | "failTasks", outcomes: readonly CompletionOutcome[]): void {
    const accepted = outcomes.filter((o) => o === null).length;
    const counter = operation === "completeTasks" ? this.#completions : this.#failures;
    if (accepted > 0) counter.add(accepted, this.#base);
    for (const outcome of outcomes) if (outcome !== null) this.refused(operation, outcome.code);
  }

  /** A thrown error: a refusal if its code says so (see REFUSAL_CODES). */
  failed(operation: string, errorType: string): void {
    if (REFUSAL_CODES.has(errorType)) this.refused(operation, errorType);
  }

  refused(operation: string, code: string): void {
    this.#refusals.add(1, { ...this.#base, [ATTR.dbOperation]: operation, [ATTR.errorType]: code });
  }

  wokeUp(reason: string): void {
    this.#wakeUps.add(1, { ...this.#base, [ATTR.wakeReason]: reason });
  }

  /** `errorType`: undefined when the operation succeeded. */
  took(operation: string, seconds: number, errorType: string | undefined): void {
    const attributes: Attributes = { ...this.#base, [ATTR.dbOperation]: operation };
    if (errorType !== undefined) attributes[ATTR.errorType] = errorType;
    this.#duration.record(seconds, attributes);
  }
}
