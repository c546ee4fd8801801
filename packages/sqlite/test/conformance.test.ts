import { runConformance } from "@sayiir/persistence-core/conformance";
import { sqliteSubject } from "./subject.js";

runConformance({
  name: "sqlite (node:sqlite, file, WAL)",
  capabilities: { durable: true, rawRecords: true },
  setup: (options) => sqliteSubject(options),
});
