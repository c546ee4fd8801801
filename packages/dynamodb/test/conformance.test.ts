import { runConformance } from "@sayiir/persistence-core/conformance";
import { describe, it } from "vitest";
import { makeSubject, server } from "./subject.js";

const info = server();

if (info === null) {
  describe("conformance: dynamodb", () => {
    it.skip("no DynamoDB server: set SAYIIR_TEST_DYNAMODB_ENDPOINT or install DynamoDB Local", () => {});
  });
} else {
  runConformance({
    name: `dynamodb (${info.server} ${info.version})`,
    capabilities: { durable: true, rawRecords: true },
    slowTestTimeoutMs: 180_000,
    setup: (options) => makeSubject(info, options),
  });
}
