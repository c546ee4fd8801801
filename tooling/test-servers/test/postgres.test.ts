import pg from "pg";
import { describe, expect, inject, it } from "vitest";

const servers = inject("postgres");

describe.skipIf(servers.length === 0)(
  `postgres${servers.length === 0 ? `: ${inject("testServersUnavailable").postgres}` : ""}`,
  () => {
    it.each(servers.map((s) => [`${s.server} ${s.version}`, s] as const))(
      "%s answers select version()",
      async (_, server) => {
        const client = new pg.Client({ connectionString: server.url });
        await client.connect();
        try {
          const { rows } = await client.query<{ version: string; server_version: string }>(
            "select version() as version, current_setting('server_version') as server_version",
          );
          expect(rows[0]?.version).toMatch(/^PostgreSQL \d+\.\d+/);
          expect(rows[0]?.server_version).toBe(server.version);
          const { rows: su } = await client.query<{ rolsuper: boolean }>(
            "select rolsuper from pg_roles where rolname = current_user",
          );
          expect(su[0]?.rolsuper).toBe(true);
          const { rows: mc } = await client.query<{ max_connections: string }>("show max_connections");
          if (server.source === "local") expect(Number(mc[0]?.max_connections)).toBeGreaterThanOrEqual(200);
        } finally {
          await client.end();
        }
      },
    );

    it("provides distinct majors when started locally", () => {
      const local = servers.filter((s) => s.source === "local");
      const majors = new Set(local.map((s) => s.version.split(".")[0]));
      expect(majors.size).toBe(local.length);
    });
  },
);
