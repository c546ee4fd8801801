// A TCP proxy for fault injection, placed between an adapter and its server.
//
// Modes:
// - "pass":      forwards bytes both ways (the normal state).
// - "cut":       destroys every open connection (both sides) and refuses new ones (accept, then
//                reset immediately): the server looks crashed or the network unplugged.
// - "blackhole": every open and new client connection stays open but nothing is forwarded or
//                answered; bytes from the client are read and discarded. This is a half-open
//                connection: the worst case, since no error ever arrives by itself.
// The proxy listens on 127.0.0.1 only.
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

export type ProxyMode = "pass" | "cut" | "blackhole";

export interface ProxyTarget {
  host: string;
  port: number;
}

export interface ProxyStats {
  /** Client connections accepted over the proxy's life. */
  accepted: number;
  /** Connections destroyed by cut() or refused while cut. */
  cut: number;
  /** Bytes dropped while blackholed. */
  discardedBytes: number;
}

interface Pair {
  client: Socket;
  upstream: Socket | null;
  /** True once this pair was blackholed: nothing more is forwarded, ever. */
  dead: boolean;
}

export class FaultProxy {
  readonly target: ProxyTarget;
  #server: Server;
  #mode: ProxyMode = "pass";
  #pairs = new Set<Pair>();
  #port = 0;
  readonly stats: ProxyStats = { accepted: 0, cut: 0, discardedBytes: 0 };

  private constructor(target: ProxyTarget) {
    this.target = target;
    this.#server = createServer({ pauseOnConnect: false }, (client) => this.#accept(client));
    this.#server.on("error", () => {});
  }

  /** Starts a proxy to `target` on a free loopback port (or `port`). */
  static async start(target: ProxyTarget, port = 0): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once("error", reject);
      proxy.#server.listen({ host: "127.0.0.1", port }, () => resolve());
    });
    const address = proxy.#server.address();
    if (address === null || typeof address === "string") throw new Error("proxy: no port");
    proxy.#port = address.port;
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  get host(): string {
    return "127.0.0.1";
  }

  get mode(): ProxyMode {
    return this.#mode;
  }

  /** Connections currently open through the proxy. */
  get openConnections(): number {
    return this.#pairs.size;
  }

  /** Forward again. Blackholed connections stay dead (their streams are desynchronised); new ones pass. */
  pass(): void {
    this.#mode = "pass";
  }

  /** Destroys every connection and refuses new ones until pass(). */
  cut(): void {
    this.#mode = "cut";
    for (const pair of this.#pairs) this.#destroy(pair, true);
  }

  /** Stops answering: open and new connections read and discard, never forward, never close. */
  blackhole(): void {
    this.#mode = "blackhole";
    for (const pair of this.#pairs) this.#kill(pair);
  }

  /** Drops every connection without changing the mode (a one-off reset). */
  resetAll(): void {
    for (const pair of this.#pairs) this.#destroy(pair, true);
  }

  async close(): Promise<void> {
    for (const pair of this.#pairs) this.#destroy(pair, false);
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    this.stats.accepted++;
    client.on("error", () => {});
    if (this.#mode === "cut") {
      this.stats.cut++;
      client.resetAndDestroy();
      return;
    }
    const pair: Pair = { client, upstream: null, dead: false };
    this.#pairs.add(pair);
    client.on("close", () => this.#destroy(pair, false));
    if (this.#mode === "blackhole") {
      this.#kill(pair);
      return;
    }
    const upstream = tcpConnect({ host: this.target.host, port: this.target.port });
    pair.upstream = upstream;
    upstream.on("error", () => {});
    upstream.on("close", () => {
      if (!pair.dead) this.#destroy(pair, false);
    });
    client.on("data", (chunk: Buffer) => {
      if (pair.dead) {
        this.stats.discardedBytes += chunk.length;
        return;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (pair.dead) return;
      client.write(chunk);
    });
    client.on("end", () => {
      if (!pair.dead) upstream.end();
    });
    upstream.on("end", () => {
      if (!pair.dead) client.end();
    });
  }

  /** Blackholes one pair: the upstream goes away silently, the client side reads into the void. */
  #kill(pair: Pair): void {
    if (pair.dead) return;
    pair.dead = true;
    pair.upstream?.destroy();
    pair.upstream = null;
    pair.client.removeAllListeners("data");
    pair.client.on("data", (chunk: Buffer) => {
      this.stats.discardedBytes += chunk.length;
    });
    pair.client.resume();
  }

  #destroy(pair: Pair, counted: boolean): void {
    if (!this.#pairs.delete(pair)) return;
    if (counted) this.stats.cut++;
    pair.dead = true;
    if (counted) pair.client.resetAndDestroy();
    else pair.client.destroy();
    pair.upstream?.destroy();
  }
}

/** Parses host and port out of a URL such as redis://h:1/0 or postgres://u:p@h:1/db. */
export function targetOf(url: string, defaultPort: number): ProxyTarget {
  const parsed = new URL(url);
  return { host: parsed.hostname || "127.0.0.1", port: parsed.port ? Number(parsed.port) : defaultPort };
}

/** The same URL with host and port replaced by the proxy's. */
export function viaProxy(url: string, proxy: FaultProxy): string {
  const parsed = new URL(url);
  parsed.hostname = proxy.host;
  parsed.port = String(proxy.port);
  return parsed.toString();
}
