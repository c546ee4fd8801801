export type { MigrationReport } from "@sayiir/persistence-core/adapter";
export { PostgresBackend } from "./backend.js";
export {
  EVENTS_INDEX,
  FINISHED_INDEX,
  LEASED_INDEX,
  READY_INDEX,
  TABLES,
  TIMER_INDEX,
  TOKEN_SEQUENCE,
} from "./layout.js";
export {
  DEFAULT_CONNECTION_TIMEOUT_MS,
  DEFAULT_POOL_SIZE,
  DEFAULT_SCHEMA,
  DEFAULT_STATEMENT_TIMEOUT_MS,
  type PostgresBackendOptions,
} from "./options.js";
export { LATEST_VERSION, MIGRATIONS, type Migration } from "./schema.js";
