import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import type { StatementName, statements } from "./sql.js";
import { prepare } from "./transaction.js";

export type Row = Record<string, SQLInputValue>;

/**
 * The statements of sql.ts on one connection, prepared on first use and kept, run by name. The
 * backend and the modules it delegates to (control.ts) run every statement through this.
 */
export class Queries {
  readonly #db: DatabaseSync;
  readonly #sql: ReturnType<typeof statements>;
  readonly #prepared = new Map<StatementName, StatementSync>();

  constructor(db: DatabaseSync, sql: ReturnType<typeof statements>) {
    this.#db = db;
    this.#sql = sql;
  }

  statement(name: StatementName): StatementSync {
    let statement = this.#prepared.get(name);
    if (statement === undefined) {
      statement = prepare(this.#db, this.#sql[name]);
      this.#prepared.set(name, statement);
    }
    return statement;
  }

  get<T>(name: StatementName, ...params: SQLInputValue[]): T | undefined {
    return this.statement(name).get(...params) as T | undefined;
  }

  /** get with named parameters. */
  getNamed<T>(name: StatementName, params: Row): T | undefined {
    return this.statement(name).get(params) as T | undefined;
  }

  all<T>(name: StatementName, ...params: SQLInputValue[]): T[] {
    return this.statement(name).all(...params) as T[];
  }

  /** all with named parameters. */
  allNamed<T>(name: StatementName, params: Row): T[] {
    return this.statement(name).all(params) as unknown as T[];
  }

  /** Runs a statement; returns the number of rows it changed. */
  run(name: StatementName, ...params: SQLInputValue[]): number {
    return Number(this.statement(name).run(...params).changes);
  }

  /** run with named parameters. */
  runNamed(name: StatementName, params: Row): number {
    return Number(this.statement(name).run(params).changes);
  }

  /** The next value of the one counter (fencing tokens and event sequences). */
  nextToken(): number {
    return (this.get<{ last_token: number }>("nextToken") as { last_token: number }).last_token;
  }

  clear(): void {
    this.#prepared.clear();
  }
}
