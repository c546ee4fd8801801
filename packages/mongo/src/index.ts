export type { MigrationReport } from "@sayiir/persistence-core/adapter";
export { MongoBackend } from "./backend.js";
export type { WakeUpMode } from "./change-stream.js";
export type { Clock } from "./clock.js";
export { type CollectionNames, collectionNames, INDEX } from "./layout.js";
export { type ClockMode, DEFAULT_CLIENT_OPTIONS, type MongoBackendOptions } from "./options.js";
export type { ServerFeatures } from "./schema.js";
