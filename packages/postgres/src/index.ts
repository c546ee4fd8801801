export { type MigrationReport, PostgresBackend } from "./backend.js";
export { LEASED_INDEX, READY_INDEX, TABLES, TOKEN_SEQUENCE } from "./layout.js";
export { LATEST_VERSION, MIGRATIONS, type Migration } from "./migrations.js";
export {
  DEFAULT_CONNECTION_TIMEOUT_MS,
  DEFAULT_POOL_SIZE,
  DEFAULT_SCHEMA,
  DEFAULT_STATEMENT_TIMEOUT_MS,
  type PostgresBackendOptions,
} from "./options.js";
