// An OpenTelemetry SDK kept in memory for the telemetry tests: finished spans from an
// InMemorySpanExporter (SimpleSpanProcessor, so a span is there as soon as it ends) and metrics
// from a reader collected on demand. Nothing is registered globally.
import {
  type Attributes,
  type AttributeValue,
  type Meter,
  metrics,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { type DataPoint, MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";

/** A reader that only collects when the test asks. */
class CollectOnDemand extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** One exported measurement: its metric name, attributes and value (a sum, or a histogram's count). */
export interface Measurement {
  name: string;
  attributes: Attributes;
  value: number;
}

export class TestTelemetry {
  readonly exporter = new InMemorySpanExporter();
  readonly #tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(this.exporter)],
  });
  readonly #reader = new CollectOnDemand();
  readonly #meterProvider = new MeterProvider({ readers: [this.#reader] });
  readonly tracer: Tracer = this.#tracerProvider.getTracer("telemetry-test");
  readonly meter: Meter = this.#meterProvider.getMeter("telemetry-test");

  spans(): ReadableSpan[] {
    return this.exporter.getFinishedSpans();
  }

  /** The spans named `name`, in the order they ended. */
  named(name: string): ReadableSpan[] {
    return this.spans().filter((span) => span.name === name);
  }

  /** The one span named `name`; fails if there is not exactly one. */
  only(name: string): ReadableSpan {
    const found = this.named(name);
    if (found.length !== 1) throw new Error(`expected one ${name} span, found ${found.length}`);
    return found[0] as ReadableSpan;
  }

  async measurements(): Promise<Measurement[]> {
    const { resourceMetrics, errors } = await this.#reader.collect();
    if (errors.length > 0) throw errors[0];
    const out: Measurement[] = [];
    for (const scope of resourceMetrics.scopeMetrics)
      for (const metric of scope.metrics)
        for (const point of metric.dataPoints as DataPoint<unknown>[]) {
          const value =
            typeof point.value === "number" ? point.value : (point.value as { count: number }).count;
          out.push({ name: metric.descriptor.name, attributes: point.attributes, value });
        }
    return out;
  }

  /** The total of metric `name` over the data points whose attributes include `where`. */
  async total(name: string, where: Attributes = {}): Promise<number> {
    const points = (await this.measurements()).filter(
      (m) => m.name === name && Object.entries(where).every(([k, v]) => m.attributes[k] === v),
    );
    return points.reduce((sum, m) => sum + m.value, 0);
  }

  /**
   * Every text this SDK would export: span names, attribute keys and values, status messages,
   * event names and attributes, and every metric's attributes. What must never leak is searched here.
   */
  async exportedTexts(): Promise<string[]> {
    const out: string[] = [];
    const add = (attributes: Attributes | undefined): void => {
      for (const [key, value] of Object.entries(attributes ?? {})) out.push(key, ...texts(value));
    };
    for (const span of this.spans()) {
      out.push(span.name, span.status.message ?? "");
      add(span.attributes);
      for (const event of span.events) {
        out.push(event.name);
        add(event.attributes);
      }
    }
    for (const m of await this.measurements()) add(m.attributes);
    return out;
  }

  /** Makes this SDK the global one (what instrument() uses without a tracer or meter); returns the undo. */
  registerGlobally(): () => void {
    trace.setGlobalTracerProvider(this.#tracerProvider);
    metrics.setGlobalMeterProvider(this.#meterProvider);
    return () => {
      trace.disable();
      metrics.disable();
    };
  }

  async shutdown(): Promise<void> {
    await this.#tracerProvider.shutdown();
    await this.#meterProvider.shutdown();
  }
}

/** An attribute value as texts: a list of numbers also as its bytes' text and comma-joined. */
function texts(value: AttributeValue | undefined): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) return [String(value)];
  const numbers = value.filter((v): v is number => typeof v === "number");
  const out = value.map(String);
  if (numbers.length === value.length && numbers.every((n) => Number.isInteger(n) && n >= 0 && n < 256))
    out.push(new TextDecoder().decode(Uint8Array.from(numbers)), numbers.join(","));
  return out;
}
