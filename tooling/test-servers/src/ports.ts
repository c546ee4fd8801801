// Free loopback ports. Ports are picked at random below Linux's ephemeral range (32768+), so an
// outgoing connection of some other process cannot take a port between our probe and the server's
// bind, and several test processes starting servers at once rarely pick the same one. The start-up
// code still retries with a new port if the bind fails.
import { createServer } from "node:net";

const LOW = 15_000;
/** Redis Cluster also binds port + 10000 (its bus), which must stay below the ephemeral range too. */
const HIGH = 22_700;
export const CLUSTER_BUS_OFFSET = 10_000;

export function isPortFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A port that is free on 127.0.0.1 now, together with `port + offset` for every offset in `alsoFree`
 * (e.g. the cluster bus port).
 */
export async function freePort(alsoFree: number[] = []): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (!(await isPortFree(port))) continue;
    let all = true;
    for (const offset of alsoFree) {
      if (!(await isPortFree(port + offset))) {
        all = false;
        break;
      }
    }
    if (all) return port;
  }
  throw new Error(`no free port found on 127.0.0.1 in ${LOW}-${HIGH} after 200 attempts`);
}
