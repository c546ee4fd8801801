import { BackendError, decodeSnapshotHeader, failures, type PendingEvent } from "@sayiir/persistence-core";
import type { ShardContext } from "./context.js";
import { bytes, decodeEvents, requestId, str, toArg } from "./replies.js";
import { Code, refusal } from "./scripts/index.js";

/*
 * sendEvent and loadPendingEvents: one script each on the instance's slot (see send-event.ts and
 * load-events.ts). Consuming an event is part of saveSnapshot's script.
 */

export async function sendEvent(
  ctx: ShardContext,
  instanceId: string,
  eventName: string,
  payload: Uint8Array,
): Promise<number> {
  const k = ctx.layout.instance(instanceId);
  const req = requestId();
  const reply = (await ctx.call(
    "sendEvent",
    "sendEvent",
    [
      k.meta,
      k.events,
      k.eventOrder,
      ctx.layout.request(k.shard, req),
      k.ready,
      k.leased,
      k.timers,
      instanceId,
      eventName,
      toArg(payload),
      req,
      ctx.recordTtlMs,
    ],
    true,
  )) as Buffer[];
  const code = Number(str(reply[0] as Buffer));
  if (code === Code.ok) return Number(str(reply[1] as Buffer));
  // Refused for its state: the status comes from the header (Lua cannot decode it).
  const status =
    code === Code.eventsClosed
      ? decodeSnapshotHeader(bytes(reply[1] as Buffer), instanceId, {
          results: [],
          lastCompletedTaskId: null,
        }).state.kind
      : undefined;
  throw (
    refusal(code, { instanceId, ...(status === undefined ? {} : { status }) }) ??
    new BackendError(`sendEvent: no sequence in the reply for ${JSON.stringify(instanceId)}`)
  );
}

export async function loadPendingEvents(ctx: ShardContext, instanceId: string): Promise<PendingEvent[]> {
  const k = ctx.layout.instance(instanceId);
  const reply = (await ctx.call("loadEvents", "loadPendingEvents", [k.meta, k.events, k.eventOrder], true)) as
    | [Buffer[], Buffer[]]
    | null;
  if (reply === null) throw failures.snapshotNotFound(instanceId);
  return decodeEvents(reply[0], reply[1]);
}
