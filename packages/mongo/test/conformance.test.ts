import { runConformance } from "@sayiir/persistence-core/conformance";
import { describe, it } from "vitest";
import { createSubject, server } from "./subject.js";

if (server === null) {
  describe("conformance: mongodb", () => {
    it.skip("no MongoDB server: set SAYIIR_TEST_MONGODB_URL or install the stand-in (see README)", () => {});
  });
} else {
  runConformance({
    name: `mongodb (${server.server} ${server.version})`,
    capabilities: { durable: true, rawRecords: true },
    slowTestTimeoutMs: 120_000,
    setup: (options) => createSubject(options),
  });
}
