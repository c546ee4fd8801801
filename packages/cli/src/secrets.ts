import { redactSecrets } from "@sayiir/persistence-core";
import { connectionSecrets } from "@sayiir/persistence-core/adapter";

/**
 * Every password the user gave on the command line, so that no output (errors included) ever
 * shows one: drivers echo connection strings in their messages, and the CLI echoes the store URL.
 */
const known = new Set<string>();

/** Remembers the secrets of a connection URL (its password, encoded and decoded, and `password=`). */
export function rememberSecrets(url: string): void {
  for (const secret of connectionSecrets(url)) known.add(secret);
}

/** Remembers one secret given apart from a URL. */
export function rememberSecret(secret: string): void {
  if (secret.length > 0) known.add(secret);
}

/** The text with every known password (and any URL userinfo password) replaced by `***`. */
export function scrub(text: string): string {
  return redactSecrets(text, [...known]);
}
