/** Small text helpers shared by the commands' human output. */

const PREVIEW_BYTES = 24;
const PREVIEW_CHARS = 40;

/** 1234 -> "1,234". */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** A byte size: "512 B", "1.5 KiB", "40.0 MiB". */
export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** A duration, coarse: "450ms", "12s", "3m 20s", "5h 2m", "3d 4h". */
export function age(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(abs)}ms`;
  const s = Math.floor(abs / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** "in 25s" or "3m 2s ago" relative to now. */
export function relative(at: number, now: number): string {
  return at >= now ? `in ${age(at - now)}` : `${age(now - at)} ago`;
}

export function iso(at: number): string {
  return new Date(at).toISOString();
}

/** What a byte value looks like: its first bytes in hex, and as text when they are UTF-8. */
export interface BytesPreview {
  size: number;
  hex: string;
  /** The start of the value as text, or null when it is not valid UTF-8 or not printable. */
  utf8: string | null;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

export function preview(bytes: Uint8Array): BytesPreview {
  const head = bytes.subarray(0, PREVIEW_BYTES);
  const hex = Buffer.from(head).toString("hex") + (bytes.length > PREVIEW_BYTES ? "…" : "");
  let utf8: string | null = null;
  try {
    // Decode a little more than shown so a cut multi-byte character at the end is not "invalid".
    const text = decoder.decode(bytes.subarray(0, PREVIEW_CHARS * 4 + 3), { stream: true });
    if (!/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) {
      utf8 = text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
    }
  } catch {
    utf8 = null;
  }
  return { size: bytes.length, hex, utf8 };
}

/** One line: `12 B  7b2261223a317d  {"a":1}`. */
export function previewLine(bytes: Uint8Array): string {
  const p = preview(bytes);
  const text = p.utf8 === null ? "" : `  ${JSON.stringify(p.utf8)}`;
  return `${size(p.size).padStart(9)}  ${p.hex.length === 0 ? "(empty)" : p.hex}${text}`;
}

/** Left-aligned columns (first column) and right-aligned numbers, two spaces apart. */
export function table(header: string[], rows: string[][], indent = ""): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    indent +
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)];
}
