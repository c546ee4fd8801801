export { main } from "./cli.js";
export { openStore, type Store } from "./connect.js";
export { canonical, digestWorkflow, type WorkflowDigest } from "./digest.js";
export { CliError, EXIT, UsageError } from "./errors.js";
export type { Io } from "./io.js";
export type { QueueStats, StoreStats } from "./stats.js";
export { parseStoreUrl, redactUrl, type StoreTarget } from "./url.js";
