/** Parses a connection string; a seed list of hosts (`h1:1,h2:2`, not a WHATWG URL) counts as one host. */
function parse(connectionString: string): URL | undefined {
  try {
    return new URL(connectionString);
  } catch {
    const oneHost = connectionString.replace(
      /^([a-z][a-z0-9+.-]*:\/\/(?:[^/?#@]*@)?)[^/?#]*/i,
      "$1localhost",
    );
    try {
      return new URL(oneHost);
    } catch {
      return undefined;
    }
  }
}

/**
 * The secrets of a connection string, to scrub from error messages: a URL's password as written
 * (percent-encoded) and decoded, and a `password` query parameter. Seed lists of several hosts
 * (MongoDB, libpq) are understood. Anything that is not a URL (a key=value string) gives none:
 * `redactSecrets` already strips `password=...` pairs.
 */
export function connectionSecrets(connectionString: string | undefined | null): string[] {
  if (typeof connectionString !== "string" || connectionString.length === 0) return [];
  const url = parse(connectionString);
  if (url === undefined) return [];
  const out: string[] = [];
  if (url.password) {
    out.push(url.password);
    try {
      out.push(decodeURIComponent(url.password));
    } catch {
      // Not valid percent-encoding: the raw form is all there is.
    }
  }
  const param = url.searchParams.get("password");
  if (param) out.push(param);
  return [...new Set(out)];
}
