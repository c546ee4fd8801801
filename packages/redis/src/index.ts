export { RedisBackend, wakeConnectionName } from "./backend.js";
export { EventField, FieldPrefix, fnv1a, KeyLayout, MetaField } from "./layout.js";
export {
  DEFAULT_CLUSTER_SHARDS,
  DEFAULT_KEY_PREFIX,
  DEFAULT_OPERATION_TIMEOUT_MS,
  DEFAULT_STANDALONE_SHARDS,
  type RedisBackendOptions,
} from "./options.js";
export type { ReplicaAcks } from "./replica-acks.js";
