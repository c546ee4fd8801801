// The backends of the worker's tests: the registry of @sayiir/backends, loading the adapters from
// their sources (the adapters depend on this package for their end-to-end tests, so depending back
// on their packages would be a cycle; the registry's own source is imported for the same reason).
import { createRegistry } from "../../backends/src/index.ts";

export const BACKENDS = createRegistry({
  prefix: "worker",
  modules: {
    memory: () => import("../../../packages/memory/src/index.ts"),
    sqlite: () => import("../../../packages/sqlite/src/index.ts"),
  },
});
