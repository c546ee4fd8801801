import { resolve } from "node:path";
import { UsageError } from "./errors.js";

/** A store as the command line names it, parsed into the options of its adapter. */
export type StoreTarget =
  | { kind: "sqlite"; display: string; path: string; tablePrefix?: string }
  | { kind: "postgres"; display: string; connectionString: string; schema?: string }
  | { kind: "redis"; display: string; url: string; keyPrefix?: string }
  | {
      kind: "redis-cluster";
      display: string;
      nodes: Array<{ host: string; port: number }>;
      username?: string;
      password?: string;
      tls: boolean;
      keyPrefix?: string;
    }
  | { kind: "mongodb"; display: string; url: string; collectionPrefix?: string }
  | {
      kind: "dynamodb";
      display: string;
      tableName: string;
      endpoint?: string;
      region?: string;
      keyPrefix?: string;
    };

export const URL_FORMS = [
  "sqlite:./file.db | sqlite:/abs/path.db            [?prefix=sayiir_]",
  "postgres://user:pass@host:5432/db                [?schema=sayiir]",
  "redis://[:pass@]host:6379 | rediss://...          [?prefix=sayiir]",
  "redis+cluster://[:pass@]host1:7000,host2:7001     [?prefix=sayiir]",
  "mongodb://host:27017/db | mongodb+srv://...       [?prefix=sayiir_]",
  "dynamodb://table?region=us-east-1                 [&endpoint=http://host:8000&prefix=p]",
];

/** The URL with its password replaced by `***`, for display. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/i, "$1:***@");
}

/** Removes `name` from the query of a URL string, returning its value (last one wins). */
function takeParam(url: URL, name: string): string | undefined {
  const value = url.searchParams.get(name) ?? undefined;
  url.searchParams.delete(name);
  return value;
}

function parseUrl(text: string): URL {
  try {
    return new URL(text);
  } catch {
    throw new UsageError(`not a valid URL: ${redactUrl(text)}`);
  }
}

function parseSqlite(text: string): StoreTarget {
  let rest = text.slice("sqlite:".length);
  if (rest.startsWith("//")) rest = rest.slice(2);
  const q = rest.indexOf("?");
  const file = q === -1 ? rest : rest.slice(0, q);
  const params = new URLSearchParams(q === -1 ? "" : rest.slice(q + 1));
  if (file.length === 0) throw new UsageError("sqlite: URL needs a file, e.g. sqlite:./app.db");
  const path = file === ":memory:" ? file : resolve(decodeURIComponent(file));
  const tablePrefix = params.get("prefix") ?? undefined;
  return { kind: "sqlite", display: text, path, ...(tablePrefix === undefined ? {} : { tablePrefix }) };
}

/** `redis+cluster://[user:pass@]h1:p1,h2:p2?prefix=p`: seed nodes of a Redis Cluster. */
function parseRedisCluster(text: string): StoreTarget {
  const match = /^redis(s?)\+cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)\/?(?:\?(.*))?$/i.exec(text);
  if (match === null) throw new UsageError(`not a valid redis+cluster URL: ${redactUrl(text)}`);
  const [, tls, user, pass, hosts, query] = match;
  const nodes = (hosts as string).split(",").map((hostPort) => {
    const [host, port] = hostPort.split(":");
    const portNumber = Number(port ?? 6379);
    if (!host || !Number.isInteger(portNumber)) throw new UsageError(`bad cluster node "${hostPort}"`);
    return { host, port: portNumber };
  });
  const params = new URLSearchParams(query ?? "");
  const keyPrefix = params.get("prefix") ?? undefined;
  return {
    kind: "redis-cluster",
    display: redactUrl(text),
    nodes,
    tls: tls === "s",
    ...(user ? { username: decodeURIComponent(user) } : {}),
    ...(pass ? { password: decodeURIComponent(pass) } : {}),
    ...(keyPrefix === undefined ? {} : { keyPrefix }),
  };
}

/** Parses a store URL; anything unknown is a UsageError listing the forms. */
export function parseStoreUrl(text: string): StoreTarget {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  switch (scheme) {
    case "sqlite":
      return parseSqlite(text);
    case "postgres":
    case "postgresql": {
      const url = parseUrl(text);
      const schema = takeParam(url, "schema");
      return {
        kind: "postgres",
        display: redactUrl(text),
        connectionString: url.toString(),
        ...(schema === undefined ? {} : { schema }),
      };
    }
    case "redis":
    case "rediss": {
      const url = parseUrl(text);
      const keyPrefix = takeParam(url, "prefix");
      return {
        kind: "redis",
        display: redactUrl(text),
        url: url.toString(),
        ...(keyPrefix === undefined ? {} : { keyPrefix }),
      };
    }
    case "redis+cluster":
    case "rediss+cluster":
      return parseRedisCluster(text);
    case "mongodb":
    case "mongodb+srv": {
      // Seed lists (h1,h2) are not WHATWG URLs: take the prefix out of the text itself.
      const match = /([?&])prefix=([^&]*)&?/.exec(text);
      const url = match === null ? text : text.replace(match[0], match[1] as string).replace(/[?&]$/, "");
      const prefix = match === null ? undefined : decodeURIComponent(match[2] as string);
      return {
        kind: "mongodb",
        display: redactUrl(text),
        url,
        ...(prefix === undefined ? {} : { collectionPrefix: prefix }),
      };
    }
    case "dynamodb": {
      const url = parseUrl(text);
      const tableName = decodeURIComponent(url.host + url.pathname.replace(/\/$/, ""));
      if (tableName.length === 0) throw new UsageError("dynamodb: URL needs a table, e.g. dynamodb://sayiir");
      const endpoint = url.searchParams.get("endpoint") ?? undefined;
      const region = url.searchParams.get("region") ?? undefined;
      const keyPrefix = url.searchParams.get("prefix") ?? undefined;
      return {
        kind: "dynamodb",
        display: redactUrl(text),
        tableName,
        ...(endpoint === undefined ? {} : { endpoint }),
        ...(region === undefined ? {} : { region }),
        ...(keyPrefix === undefined ? {} : { keyPrefix }),
      };
    }
    default:
      throw new UsageError(
        `unknown store URL "${redactUrl(text)}"; use one of:\n  ${URL_FORMS.join("\n  ")}`,
      );
  }
}
