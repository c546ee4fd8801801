import { connect, type Socket } from "node:net";

/*
 * The write commands a Redis server propagates to its replicas, seen from a fake replica: a plain
 * connection that sends SYNC, skips the RDB the server answers with, and then reads the
 * replication stream (RESP arrays: MULTI, the write commands each script ran, EXEC; PING now and
 * then). Scripts replicate their effects (Redis 7), so this lists exactly which keys and hash
 * fields a script wrote, and nothing it only read. No MONITOR, no DEBUG, no OBJECT.
 */

type Command = Buffer[];

export class ReplicationStream {
  readonly #socket: Socket;
  #buffer = Buffer.alloc(0);
  #rdbLeft: number | "eof" | null = null;
  #eofMark: Buffer | null = null;
  #synced = false;
  #onSynced: (() => void) | undefined;
  readonly commands: Command[] = [];

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#feed(chunk));
    socket.on("error", () => {});
  }

  /** Attaches to the server at `url` and waits until the RDB is through: every later write is seen. */
  static async open(url: string, timeoutMs = 20_000): Promise<ReplicationStream> {
    const { hostname, port } = new URL(url);
    const socket = connect(Number(port || 6379), hostname);
    const stream = new ReplicationStream(socket);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no RDB from SYNC in time")), timeoutMs);
      stream.#onSynced = () => {
        clearTimeout(timer);
        resolve();
      };
      socket.write("*1\r\n$4\r\nSYNC\r\n");
    });
    return stream;
  }

  /** The commands seen so far (then forgets them) whose arguments mention `needle`, as strings. */
  take(needle: string): string[][] {
    const seen = this.commands.splice(0);
    return seen
      .filter((command) => command.some((arg) => arg.includes(needle)))
      .map((command) => command.map((arg) => arg.toString("latin1")));
  }

  /** Waits until the server has sent what it had to send (a PING through the stream is not needed: writes go out at once). */
  async settle(ms = 150): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
  }

  close(): void {
    this.#socket.destroy();
  }

  #feed(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      if (!this.#synced) {
        if (!this.#skipRdb()) return;
        continue;
      }
      const parsed = parseArray(this.#buffer, 0);
      if (parsed === null) return;
      this.#buffer = this.#buffer.subarray(parsed.end);
      if (parsed.command !== null) this.commands.push(parsed.command);
    }
  }

  /** Skips keep-alive newlines and the RDB ("$len\r\n" + bytes, or "$EOF:<mark>\r\n" ... mark). */
  #skipRdb(): boolean {
    if (this.#rdbLeft === null) {
      while (this.#buffer[0] === 0x0a) this.#buffer = this.#buffer.subarray(1);
      const line = this.#buffer.indexOf("\r\n");
      if (line < 0) return false;
      const head = this.#buffer.subarray(0, line).toString("latin1");
      this.#buffer = this.#buffer.subarray(line + 2);
      if (head.startsWith("$EOF:")) {
        this.#rdbLeft = "eof";
        this.#eofMark = Buffer.from(head.slice(5), "latin1");
      } else if (head.startsWith("$")) {
        this.#rdbLeft = Number(head.slice(1));
      } else {
        throw new Error(`SYNC answered ${head}`);
      }
    }
    if (this.#rdbLeft === "eof") {
      const at = this.#buffer.indexOf(this.#eofMark as Buffer);
      if (at < 0) return false;
      this.#buffer = this.#buffer.subarray(at + (this.#eofMark as Buffer).length);
    } else {
      if (this.#buffer.length < this.#rdbLeft) {
        this.#rdbLeft -= this.#buffer.length;
        this.#buffer = Buffer.alloc(0);
        return false;
      }
      this.#buffer = this.#buffer.subarray(this.#rdbLeft);
    }
    this.#synced = true;
    this.#onSynced?.();
    return true;
  }
}

/** One RESP array of bulk strings from `at` (null: not all there yet); a stray newline is skipped. */
function parseArray(buf: Buffer, at: number): { command: Command | null; end: number } | null {
  if (buf.length <= at) return null;
  if (buf[at] === 0x0a) return { command: null, end: at + 1 };
  const line = buf.indexOf("\r\n", at);
  if (line < 0) return null;
  const head = buf.subarray(at, line).toString("latin1");
  if (!head.startsWith("*")) return { command: null, end: line + 2 };
  const count = Number(head.slice(1));
  const command: Command = [];
  let pos = line + 2;
  for (let i = 0; i < count; i++) {
    const end = buf.indexOf("\r\n", pos);
    if (end < 0) return null;
    const length = Number(buf.subarray(pos + 1, end).toString("latin1"));
    if (buf.length < end + 2 + length + 2) return null;
    command.push(buf.subarray(end + 2, end + 2 + length));
    pos = end + 2 + length + 2;
  }
  return { command, end: pos };
}
