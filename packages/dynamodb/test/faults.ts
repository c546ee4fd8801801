/*
 * The one fault-injection seam of the DynamoDB tests: `intercept`, a middleware on the client's
 * own stack (`client.middlewareStack`), removed when the test ends. The backend needs no hook of
 * its own: every request it makes goes through `backend.client`, a user-supplied client included.
 * DynamoDB Local never throttles and never reports transaction conflicts, and a lost response or
 * a crash before a commit cannot be provoked on a server: tests make the client see them here.
 *
 * Two places on the stack:
 *  - "initialize": once per call, before the SDK's retries (sees the command's input);
 *  - "deserialize": once per attempt, inside the SDK's retry middleware, so the SDK's retry
 *    strategy sees what the interceptor throws exactly as it would see the server's errors.
 * Every helper below is built on it.
 */
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { onTestFinished } from "vitest";

export interface Call {
  /** The command's class name, e.g. "TransactWriteItemsCommand". */
  command: string;
  input: Record<string, unknown>;
}

/**
 * Runs `around` in place of every request of `client` (`send` forwards it) until the test ends.
 */
export function intercept(
  client: DynamoDBClient,
  step: "initialize" | "deserialize",
  around: (call: Call, send: () => Promise<unknown>) => Promise<unknown>,
): void {
  const name = `intercept-${Math.random().toString(36).slice(2)}`;
  const handle = async <A extends { input: unknown }, O>(
    next: (args: A) => Promise<O>,
    args: A,
    commandName: unknown,
  ): Promise<O> =>
    (await around({ command: String(commandName), input: args.input as Record<string, unknown> }, () =>
      next(args),
    )) as O;
  if (step === "initialize")
    client.middlewareStack.add((next, context) => (args) => handle(next, args, context.commandName), {
      step,
      name,
    });
  else
    client.middlewareStack.add((next, context) => (args) => handle(next, args, context.commandName), {
      step,
      name,
    });
  onTestFinished(() => {
    client.middlewareStack.remove(name);
  });
}

export interface Injection {
  /** Calls that failed on purpose so far. */
  count: number;
  /** How many more calls will fail. */
  remaining: number;
}

/**
 * Throws `makeError()` instead of sending the request, for the next `times` calls of the given
 * commands (inside the SDK's retries: a retryable error is retried as the server's would be).
 */
export function injectErrors(
  client: DynamoDBClient,
  commands: string[],
  times: number,
  makeError: () => Error,
): Injection {
  const state: Injection = { count: 0, remaining: times };
  intercept(client, "deserialize", async (call, send) => {
    if (state.remaining > 0 && commands.includes(call.command)) {
      state.remaining--;
      state.count++;
      throw makeError();
    }
    return send();
  });
  return state;
}

/**
 * Lets the next `times` calls of the given commands REACH the server, then throws `makeError()`
 * instead of returning the response: a write that applied but whose response was lost. A 5xx
 * error is retried by the SDK (the same request again), a 400 one is not.
 */
export function loseResponses(
  client: DynamoDBClient,
  commands: string[],
  times: number,
  makeError: () => Error,
): Injection {
  const state: Injection = { count: 0, remaining: times };
  intercept(client, "deserialize", async (call, send) => {
    const out = await send();
    if (state.remaining > 0 && commands.includes(call.command)) {
      state.remaining--;
      state.count++;
      throw makeError();
    }
    return out;
  });
  return state;
}

/** Holds the calls of `command` until `parties` of them are waiting, then lets them all go. */
export function barrier(client: DynamoDBClient, command: string, parties: number): void {
  let waiting = 0;
  let release: () => void = () => undefined;
  const all = new Promise<void>((resolve) => {
    release = resolve;
  });
  intercept(client, "deserialize", async (call, send) => {
    if (call.command === command && waiting < parties) {
      waiting++;
      if (waiting === parties) release();
      await all;
    }
    return send();
  });
}

/** Every command the client sends from now on, with its input (before the SDK's retries). */
export function record(client: DynamoDBClient): Call[] {
  const seen: Call[] = [];
  intercept(client, "initialize", async (call, send) => {
    seen.push(call);
    return send();
  });
  return seen;
}

/** Runs `hook` once, before the next call of `command` reaches the SDK. */
export function beforeNext(
  client: DynamoDBClient,
  command: string,
  hook: () => Promise<void>,
): { fired: () => boolean } {
  return beforeNextOf(client, [command], hook);
}

/** The commands that write. */
export const WRITES = [
  "TransactWriteItemsCommand",
  "PutItemCommand",
  "UpdateItemCommand",
  "DeleteItemCommand",
  "BatchWriteItemCommand",
];

/** Runs `hook` once, before the next call of any of `commands` is sent. */
export function beforeNextOf(
  client: DynamoDBClient,
  commands: readonly string[],
  hook: () => Promise<void>,
): { fired: () => boolean } {
  let armed = true;
  let fired = false;
  intercept(client, "initialize", async (call, send) => {
    if (armed && commands.includes(call.command)) {
      armed = false;
      await hook();
      fired = true;
    }
    return send();
  });
  return { fired: () => fired };
}
