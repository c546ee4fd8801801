export { DynamoDBBackend } from "./backend.js";
export { CHUNK_BYTES, INLINE_MAX_BYTES, Layout, LIST_INDEX, READY_INDEX } from "./layout.js";
export type { DynamoDBBackendOptions } from "./options.js";
export { TTL_ATTRIBUTE, tableDefinition } from "./table.js";
