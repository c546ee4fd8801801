export { MongoBackend } from "./backend.js";
export type { Clock } from "./clock.js";
export { type CollectionNames, collectionNames, INDEX } from "./layout.js";
export type { ServerFeatures } from "./migrations.js";
export { type ClockMode, DEFAULT_CLIENT_OPTIONS, type MongoBackendOptions } from "./options.js";
