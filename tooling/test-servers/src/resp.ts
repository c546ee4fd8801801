// A minimal one-shot Redis command over a raw socket, for readiness and cluster-state polling.
// (The version shown in reports is read with ioredis, the official client; this only avoids
// ioredis's reconnect loop while a server is still starting.)
import { connect } from "node:net";

/** Sends one command and returns its reply as text (simple or bulk string, or integer). */
export function redisCommand(host: string, port: number, args: string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let buffer = Buffer.alloc(0);
    const done = (error: Error | undefined, value?: string): void => {
      socket.destroy();
      if (error) reject(error);
      else resolve(value ?? "");
    };
    socket.setTimeout(timeoutMs, () =>
      done(new Error(`no reply from ${host}:${port} within ${timeoutMs} ms`)),
    );
    socket.once("error", (error) => done(error));
    socket.once("connect", () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
    });
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const text = buffer.toString("utf8");
      const eol = text.indexOf("\r\n");
      if (eol < 0) return;
      const head = text.slice(1, eol);
      switch (text[0]) {
        case "+":
        case ":":
          return done(undefined, head);
        case "-":
          return done(new Error(head));
        case "$": {
          const length = Number(head);
          if (length < 0) return done(undefined, "");
          const body = buffer.subarray(Buffer.byteLength(text.slice(0, eol + 2)));
          if (body.length >= length + 2) done(undefined, body.subarray(0, length).toString("utf8"));
          return;
        }
        default:
          return done(
            new Error(`unexpected reply from ${host}:${port}: ${JSON.stringify(text.slice(0, 40))}`),
          );
      }
    });
  });
}

/** Parses `INFO` / `CLUSTER INFO` text into a map. */
export function parseInfo(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) map.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return map;
}
