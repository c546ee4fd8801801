// @sayiir/persistence-core/telemetry: OpenTelemetry spans and metrics for any backend. The only
// module of core that imports @opentelemetry/api (an optional peer dependency): whoever does not
// import this entry point loads none of it.
export { ATTR } from "./attributes.js";
export { type InstrumentOptions, instrument } from "./instrument.js";
export { METRIC } from "./metrics.js";
export { INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION } from "./version.js";
