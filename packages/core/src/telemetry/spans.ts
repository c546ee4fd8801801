// One span per operation: started before the call (so a validation error is traced too), active
// while it runs (a driver's own instrumentation nests under it), ended with its outcome.
import { type Attributes, SpanKind, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import { isPersistenceError } from "../errors.js";
import { ATTR } from "./attributes.js";
import type { Instruments } from "./metrics.js";

/**
 * What an error is called on a span and in metrics: the PersistenceError code ("CLAIM_LOST"), else
 * the error's class name, else "_OTHER" (OpenTelemetry's fallback). Never its message.
 */
export function errorType(error: unknown): string {
  if (isPersistenceError(error)) return error.code;
  if (error instanceof Error && error.name !== "") return error.name;
  return "_OTHER";
}

export class Spans {
  readonly #tracer: Tracer;
  /** db.system.name and db.namespace: on every span. */
  readonly #base: Attributes;
  readonly #instruments: () => Instruments;

  constructor(tracer: Tracer, base: Attributes, instruments: () => Instruments) {
    this.#tracer = tracer;
    this.#base = base;
    this.#instruments = instruments;
  }

  /**
   * Runs `call` in a span named `operation` with `attributes`; on success `settle` turns the result
   * into more attributes and its metrics. A thrown error (sync or async) sets status ERROR and
   * error.type, is counted, and is rethrown unchanged.
   */
  run<T>(
    operation: string,
    attributes: Attributes,
    call: () => Promise<T>,
    settle?: (result: T, instruments: Instruments) => Attributes,
  ): Promise<T> {
    const startAttributes = { ...this.#base, [ATTR.dbOperation]: operation, ...attributes };
    const options = { kind: SpanKind.CLIENT, attributes: startAttributes };
    return this.#tracer.startActiveSpan(operation, options, async (span) => {
      const instruments = this.#instruments();
      const started = performance.now();
      const took = (type: string | undefined): void => {
        // waitForTasks waits on purpose: its time would drown the store's latency.
        if (operation !== "waitForTasks")
          instruments.took(operation, (performance.now() - started) / 1000, type);
      };
      try {
        const result = await call();
        if (settle !== undefined) span.setAttributes(settle(result, instruments));
        span.setStatus({ code: SpanStatusCode.OK });
        took(undefined);
        return result;
      } catch (error) {
        const type = errorType(error);
        span.setAttribute(ATTR.errorType, type);
        span.setStatus({ code: SpanStatusCode.ERROR, message: type });
        instruments.failed(operation, type);
        took(type);
        throw error;
      } finally {
        span.end();
      }
    });
  }
}
