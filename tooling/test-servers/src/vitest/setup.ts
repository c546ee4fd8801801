// Shared body of the per-kind vitest global setups: obtain the server(s), record them for the
// summary, `provide` them to the tests, and hand vitest a teardown that stops what was started.
import type { TestProject } from "vitest/node";
import { type ObtainSpec, obtain } from "../acquire.ts";
import type { ServerInfo } from "../index.ts";
import { errorMessage, log, since } from "../log.ts";
import { writeServerReport } from "../report.ts";

export type Teardown = () => Promise<void>;

export async function setupServers<T extends ServerInfo>(
  project: TestProject,
  spec: ObtainSpec<T>,
  provide: (servers: T[]) => void,
): Promise<Teardown> {
  const { servers, unavailable } = await obtain(spec);
  const infos = servers.map((s) => s.info);
  provide(infos);
  const notes = { ...(project.getProvidedContext().testServersUnavailable ?? {}) };
  if (unavailable) notes[spec.kind] = unavailable;
  project.provide("testServersUnavailable", notes);
  try {
    writeServerReport(project.config.root, spec.kind, infos, unavailable);
  } catch (error) {
    log(`could not write the server report: ${errorMessage(error)}`);
  }
  return async () => {
    if (servers.length === 0) return;
    const started = performance.now();
    const results = await Promise.allSettled(servers.map((s) => s.stop()));
    const failed = results.filter((r) => r.status === "rejected");
    log(`${spec.kind}: stopped ${servers.length - failed.length}/${servers.length} in ${since(started)} ms`);
    for (const f of failed)
      log(`${spec.kind}: stop failed: ${errorMessage((f as PromiseRejectedResult).reason)}`);
  };
}
