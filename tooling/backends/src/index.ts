export {
  BACKEND_ALIASES,
  BACKEND_NAMES,
  type BackendName,
  backendNamed,
  isBackendName,
  parseBackendName,
  parseTargetName,
  REDIS_CLUSTER,
  SERVER_KINDS,
  type ServerKind,
  type ServerName,
  type TargetName,
} from "./names.ts";
export { BackendUnavailable, createRegistry } from "./registry.ts";
export type {
  Address,
  BackendEntry,
  ClientOptions,
  CreateOptions,
  Registry,
  RegistryProfile,
  StoreConfig,
  Subject,
} from "./types.ts";
export {
  envOfUrls,
  type ServerUrls,
  serverAddress,
  through,
  URL_VARIABLES,
  urlsFromEnv,
} from "./urls.ts";
