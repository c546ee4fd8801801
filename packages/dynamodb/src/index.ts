export type { MigrationReport } from "@sayiir/persistence-core/adapter";
export { DynamoDBBackend } from "./backend.js";
export {
  CHUNK_BYTES,
  FINISHED_INDEX,
  INLINE_MAX_BYTES,
  Layout,
  LIST_INDEX,
  READY_INDEX,
  TIMER_INDEX,
  TTL_ATTRIBUTE,
} from "./layout.js";
export type { DynamoDBBackendOptions } from "./options.js";
export { tableDefinition } from "./schema.js";
