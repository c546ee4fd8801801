/**
 * The secrets of a connection string, to scrub from error messages: a URL's password as written
 * (percent-encoded) and decoded, and a `password` query parameter. Anything that is not a URL
 * (a key=value string) gives none: `redactSecrets` already strips `password=...` pairs.
 */
export function connectionSecrets(connectionString: string | undefined | null): string[] {
  if (typeof connectionString !== "string" || connectionString.length === 0) return [];
  let url: URL;
  try {
    url = new URL(connectionString);
  } catch {
    return [];
  }
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
