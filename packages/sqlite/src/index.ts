export { SqliteBackend } from "./backend.js";
export { SCHEMA_VERSION } from "./migrations.js";
export {
  DEFAULT_BUSY_TIMEOUT_MS,
  DEFAULT_TABLE_PREFIX,
  type SqliteBackendOptions,
  type SynchronousMode,
} from "./options.js";
