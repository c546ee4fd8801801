export { RedisBackend } from "./backend.js";
export { fnv1a, KeyLayout, MetaField } from "./layout.js";
export {
  DEFAULT_KEY_PREFIX,
  DEFAULT_OPERATION_TIMEOUT_MS,
  DEFAULT_SHARDS,
  type RedisBackendOptions,
} from "./options.js";
