// The fault proxy itself: pass forwards, cut resets open and new connections, blackhole accepts
// and never answers nor closes, and pass heals for new connections.
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FaultProxy, targetOf, viaProxy } from "../src/proxy.ts";

let echo: Server;
let echoPort = 0;

beforeAll(async () => {
  echo = createServer((socket) => {
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen({ host: "127.0.0.1", port: 0 }, resolve));
  const address = echo.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  echoPort = address.port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Resolves with the echoed text, or "timeout", "closed" or "error:<code>". */
function roundTrip(socket: Socket, message: string, timeoutMs = 300): Promise<string> {
  return new Promise((resolve) => {
    let received = "";
    const done = (value: string) => {
      clearTimeout(timer);
      socket.removeAllListeners("data");
      resolve(value);
    };
    const timer = setTimeout(() => done("timeout"), timeoutMs);
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString();
      if (received === message) done(received);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => done(`error:${error.code}`));
    socket.once("close", () => done("closed"));
    socket.write(message);
  });
}

/** A new connection through a cut proxy: either connect fails or the socket is reset at once. */
async function newConnectionOutcome(port: number): Promise<string> {
  try {
    const socket = await open(port);
    socket.on("error", () => {});
    return await roundTrip(socket, "x");
  } catch (error) {
    return `error:${(error as NodeJS.ErrnoException).code}`;
  }
}

describe("fault proxy", () => {
  it("forwards in pass mode, resets on cut, refuses while cut, heals on pass", async () => {
    const proxy = await FaultProxy.start({ host: "127.0.0.1", port: echoPort });
    try {
      const a = await open(proxy.port);
      a.on("error", () => {});
      expect(await roundTrip(a, "hello")).toBe("hello");
      expect(proxy.openConnections).toBe(1);

      const closed = new Promise<void>((resolve) => a.once("close", () => resolve()));
      proxy.cut();
      await closed;
      expect(a.destroyed).toBe(true);
      expect(proxy.openConnections).toBe(0);

      const refused = await newConnectionOutcome(proxy.port);
      expect(refused === "closed" || refused.startsWith("error:")).toBe(true);

      proxy.pass();
      const b = await open(proxy.port);
      b.on("error", () => {});
      expect(await roundTrip(b, "again")).toBe("again");
      b.destroy();
      expect(proxy.stats.cut).toBeGreaterThanOrEqual(2);
    } finally {
      await proxy.close();
    }
  });

  it("blackhole accepts, discards, never answers and never closes; new connections pass after heal", async () => {
    const proxy = await FaultProxy.start({ host: "127.0.0.1", port: echoPort });
    try {
      const a = await open(proxy.port);
      a.on("error", () => {});
      expect(await roundTrip(a, "one")).toBe("one");
      proxy.blackhole();
      expect(await roundTrip(a, "two", 400)).toBe("timeout");
      expect(a.destroyed).toBe(false);

      const fresh = await open(proxy.port);
      fresh.on("error", () => {});
      expect(await roundTrip(fresh, "three", 400)).toBe("timeout");
      expect(fresh.destroyed).toBe(false);
      expect(proxy.stats.discardedBytes).toBeGreaterThanOrEqual("twothree".length);

      proxy.pass();
      // A blackholed connection stays dead (the stream lost bytes); a new one works.
      expect(await roundTrip(a, "four", 300)).toBe("timeout");
      const healed = await open(proxy.port);
      healed.on("error", () => {});
      expect(await roundTrip(healed, "five")).toBe("five");
      for (const s of [a, fresh, healed]) s.destroy();
    } finally {
      await proxy.close();
    }
  });

  it("listens on loopback only and rewrites URLs", async () => {
    const proxy = await FaultProxy.start({ host: "127.0.0.1", port: echoPort });
    try {
      expect(proxy.host).toBe("127.0.0.1");
      expect(targetOf("redis://127.0.0.1:6390/0", 6379)).toEqual({ host: "127.0.0.1", port: 6390 });
      expect(targetOf("postgres://u:p@localhost/db", 5432)).toEqual({ host: "localhost", port: 5432 });
      expect(viaProxy("postgres://u:p@localhost:5433/db", proxy)).toBe(
        `postgres://u:p@127.0.0.1:${proxy.port}/db`,
      );
    } finally {
      await proxy.close();
    }
  });
});
