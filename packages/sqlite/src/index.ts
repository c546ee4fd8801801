export type { MigrationReport } from "@sayiir/persistence-core/adapter";
export { SqliteBackend } from "./backend.js";
export {
  DEFAULT_BUSY_TIMEOUT_MS,
  DEFAULT_TABLE_PREFIX,
  type SqliteBackendOptions,
  type SynchronousMode,
} from "./options.js";
export { SCHEMA_VERSION } from "./schema.js";
