// Is there a container runtime testcontainers can use? Asked once per process, with a short
// timeout: without Docker/Podman testcontainers fails fast with "Could not find a working container
// runtime strategy", which here means "no runtime", not an error.
import { containersDisabled, envMs } from "./config.ts";
import { errorMessage, log } from "./log.ts";
import { withTimeout } from "./wait.ts";

export type ContainerRuntime =
  | { available: true; description: string }
  | { available: false; reason: string };

let detection: Promise<ContainerRuntime> | undefined;

export function detectContainerRuntime(): Promise<ContainerRuntime> {
  detection ??= detect();
  return detection;
}

async function detect(): Promise<ContainerRuntime> {
  if (containersDisabled()) return { available: false, reason: "disabled by SAYIIR_TEST_CONTAINERS=0" };
  const started = performance.now();
  try {
    // Imported lazily: loading testcontainers costs ~200 ms, wasted when env URLs are set.
    const { getContainerRuntimeClient } = await import("testcontainers");
    const client = await withTimeout(
      getContainerRuntimeClient(),
      envMs("SAYIIR_TEST_CONTAINER_DETECT_TIMEOUT_MS", 5000),
      "container runtime detection",
    );
    const rt = client.info.containerRuntime;
    const description = `${rt.operatingSystem} ${rt.serverVersion} at ${rt.host}`;
    log(`container runtime found in ${Math.round(performance.now() - started)} ms: ${description}`);
    return { available: true, description };
  } catch (error) {
    const reason = errorMessage(error);
    if (!/Could not find a working container runtime strategy/i.test(reason)) {
      // Something else went wrong (a broken socket, a timeout): still fall through, but say so.
      log(`container runtime not usable (${reason}); using local servers`);
    }
    return { available: false, reason };
  }
}

/** Awaits `work`; if it fails, stops the container first, so a half-set-up container never lingers. */
export async function stopOnFailure<T>(
  container: { stop(): Promise<unknown> },
  work: Promise<T>,
): Promise<T> {
  try {
    return await work;
  } catch (error) {
    await container.stop().catch(() => {});
    throw error;
  }
}
