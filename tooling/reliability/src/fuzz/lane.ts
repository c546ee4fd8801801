// One side of the differential comparison: a backend (and two more clients for races) with its
// bookkeeping, and the normalisation of what is legitimately backend-specific:
// - fencing tokens and event sequences are compared by identity: each new one gets a label in the
//   order it first appears (per lane), and each backend's tokens must strictly increase per
//   (instance, task), its event sequences per instance;
// - claimedAt/expiresAt/sentAt are compared as "t"/null; a snapshot's updatedAt, pausedAt and
//   cancelledAt (and an attempt's lastFailedAt) are "now" when the store's clock set them (pause, resume, cancel, a result on a
//   workflow stamped so), and exact otherwise (the fuzzer's own values are in 2100 or long ago).
import type {
  AvailableTask,
  EventRef,
  PendingEvent,
  PersistentBackend,
  TaskClaim,
} from "@sayiir/persistence-core";
import { type ConsumeRef, EVENTS, type EventIx, type FenceRef, type Inst, type Shape } from "./ops.ts";

/** A token no backend issues (global sequences are small, time-based ones are ~1.7e15). */
export const BOGUS_TOKEN = Number.MAX_SAFE_INTEGER - 7;
/** An event sequence no backend issues. */
export const BOGUS_SEQUENCE = Number.MAX_SAFE_INTEGER - 11;

/** The clock window of this process: a timestamp in it was set by a store's clock during the run. */
const CLOCK_FROM = Date.now() - 86_400_000;
const isClockTime = (value: unknown): boolean =>
  typeof value === "number" && value >= CLOCK_FROM && value <= Date.now() + 86_400_000;

export class Lane {
  /** Label of each (instance, task, token): tokens need only be unique per (instance, task). */
  readonly labels = new Map<string, string>();
  /** Claims made in this run, in order, per "instance\0task". */
  readonly claims = new Map<string, TaskClaim[]>();
  readonly lastToken = new Map<string, number>();
  /** Label of each (instance, event sequence). */
  readonly eventLabels = new Map<string, string>();
  /** The last sequence seen per instance (since it was last deleted). */
  readonly lastSequence = new Map<string, number>();
  /** Events sent per instance (since it was last deleted), in order. */
  readonly sent = new Map<string, EventRef[]>();
  /** The last claim made on each instance (any task). */
  readonly lastClaim = new Map<string, TaskClaim>();
  /** The event the last discovered task of each instance carried. */
  readonly carried = new Map<string, EventRef>();
  /** The shape last written over each instance (by a save or a worker's step that landed). */
  readonly written = new Map<string, Shape>();
  readonly violations: string[] = [];
  readonly name: string;
  readonly clients: PersistentBackend[];
  readonly ids: (inst: Inst) => string;
  #next = 0;
  #nextEvent = 0;

  constructor(name: string, clients: PersistentBackend[], ids: (inst: Inst) => string) {
    this.name = name;
    this.clients = clients;
    this.ids = ids;
  }

  get backend(): PersistentBackend {
    return this.clients[0]!;
  }

  label(claim: TaskClaim): string {
    const id = `${claim.instanceId}\0${claim.taskId}\0${claim.token}`;
    let label = this.labels.get(id);
    if (label === undefined) {
      label = `c${this.#next++}`;
      this.labels.set(id, label);
      const key = `${claim.instanceId}\0${claim.taskId}`;
      const last = this.lastToken.get(key);
      if (!Number.isSafeInteger(claim.token) || claim.token < 1) {
        this.violations.push(`token ${claim.token} is not a positive safe integer`);
      }
      if (last !== undefined && claim.token <= last) {
        this.violations.push(`token ${claim.token} on ${key} does not exceed the earlier ${last}`);
      }
      this.lastToken.set(key, claim.token);
      const list = this.claims.get(key) ?? [];
      list.push(claim);
      this.claims.set(key, list);
      this.lastClaim.set(claim.instanceId, claim);
    }
    return label;
  }

  /** An event sent: checks its sequence increases per instance, remembers it, labels it. */
  sentEvent(instanceId: string, eventName: string, sequence: number): string {
    if (!Number.isSafeInteger(sequence) || sequence < 1) {
      this.violations.push(`event sequence ${sequence} is not a positive safe integer`);
    }
    const last = this.lastSequence.get(instanceId);
    if (last !== undefined && sequence <= last) {
      this.violations.push(`event sequence ${sequence} on ${instanceId} does not exceed the earlier ${last}`);
    }
    this.lastSequence.set(instanceId, sequence);
    this.sent.set(instanceId, [...(this.sent.get(instanceId) ?? []), { eventName, sequence }]);
    return this.eventLabel(instanceId, sequence);
  }

  eventLabel(instanceId: string, sequence: number): string {
    const id = `${instanceId}\0${sequence}`;
    let label = this.eventLabels.get(id);
    if (label === undefined) {
      label = `e${this.#nextEvent++}`;
      this.eventLabels.set(id, label);
    }
    return label;
  }

  /** The instance was deleted: its events are gone, and a re-created one may number them afresh. */
  forgetEvents(instanceId: string): void {
    this.lastSequence.delete(instanceId);
    this.sent.delete(instanceId);
    this.carried.delete(instanceId);
    for (const key of [...this.eventLabels.keys()]) {
      if (key.startsWith(`${instanceId}\0`)) this.eventLabels.delete(key);
    }
  }

  /** The claim a completion carries: an earlier claim of this run, or a made-up token for `worker`. */
  completionClaim(inst: Inst, taskId: string, ref: FenceRef, worker: string): TaskClaim {
    const list = this.claims.get(`${this.ids(inst)}\0${taskId}`) ?? [];
    const earlier = ref === "first" ? list[0] : ref === "latest" ? list[list.length - 1] : undefined;
    if (earlier !== undefined) return earlier;
    return {
      instanceId: this.ids(inst),
      taskId,
      workerId: worker,
      claimedAt: 0,
      expiresAt: null,
      token: BOGUS_TOKEN,
    };
  }

  fence(inst: Inst, taskId: string, ref: FenceRef): { taskId: string; token: number } | undefined {
    if (ref === "none") return undefined;
    if (ref === "bogus") return { taskId, token: BOGUS_TOKEN };
    const list = this.claims.get(`${this.ids(inst)}\0${taskId}`);
    if (list === undefined || list.length === 0) return undefined;
    const claim = ref === "latest" ? list[list.length - 1]! : list[0]!;
    return { taskId, token: claim.token };
  }

  /** The event name of a send: the given one, or the one the instance's last written wait awaits. */
  eventName(inst: Inst, event: EventIx | "awaited"): string {
    if (event !== "awaited") return EVENTS[event];
    const shape = this.written.get(this.ids(inst));
    if (shape?.kind === "awaiting") return EVENTS[shape.event];
    if (shape?.kind === "paused" && shape.position.at === "event") return EVENTS[shape.position.event];
    return EVENTS[0];
  }

  /** The fuzzer's instance index of an instance id of this lane. */
  inst(instanceId: string): Inst | undefined {
    return ([0, 1, 2] as const).find((i) => this.ids(i) === instanceId);
  }

  /** The event a write consumes (see ConsumeRef); a ref that names nothing becomes a bogus sequence. */
  consumeEvent(inst: Inst, eventName: string, ref: ConsumeRef): EventRef | undefined {
    if (ref === "none") return undefined;
    const instanceId = this.ids(inst);
    if (ref === "carried") return this.carried.get(instanceId) ?? { eventName, sequence: BOGUS_SEQUENCE };
    const named = (this.sent.get(instanceId) ?? []).filter((e) => e.eventName === eventName);
    const pick = ref === "first" ? named[0] : ref === "latest" ? named[named.length - 1] : undefined;
    return pick ?? { eventName, sequence: BOGUS_SEQUENCE };
  }

  normClaim(claim: TaskClaim | null): unknown {
    if (claim === null) return null;
    const renewed = "workflowPaused" in claim ? { workflowPaused: claim.workflowPaused } : {};
    return {
      instanceId: claim.instanceId,
      taskId: claim.taskId,
      workerId: claim.workerId,
      claimedAt:
        typeof claim.claimedAt === "number" && Number.isFinite(claim.claimedAt) ? "t" : claim.claimedAt,
      expiresAt:
        claim.expiresAt === null ? null : typeof claim.expiresAt === "number" ? "t" : claim.expiresAt,
      token: this.label(claim),
      ...renewed,
    };
  }

  /** An available (or claimed) task: remembers the event it carries, labels it. */
  normTask(task: AvailableTask): Record<string, unknown> {
    if (task.event !== undefined) this.carried.set(task.instanceId, task.event);
    return {
      instanceId: task.instanceId,
      taskId: task.taskId,
      input: bytes(task.input),
      hash: task.workflowDefinitionHash,
      event:
        task.event === undefined
          ? null
          : {
              eventName: task.event.eventName,
              sequence: this.eventLabel(task.instanceId, task.event.sequence),
            },
      timedOut: task.timedOut === true,
      attempt: task.attempt,
      priority: task.priority,
      queue: task.queue,
    };
  }

  normEvents(instanceId: string, events: PendingEvent[]): unknown {
    return events.map((e) => ({
      eventName: e.eventName,
      sequence: this.eventLabel(instanceId, e.sequence),
      payload: bytes(e.payload),
      sentAt: typeof e.sentAt === "number" && Number.isFinite(e.sentAt) ? "t" : e.sentAt,
    }));
  }
}

export const bytes = (b: Uint8Array): unknown => (b instanceof Uint8Array ? Array.from(b) : { notBytes: b });

/** The snapshot fields a store's clock may set (an attempt's lastFailedAt is set by failTasks). */
const CLOCK_KEYS = new Set(["updatedAt", "pausedAt", "cancelledAt", "lastFailedAt"]);

/** A loaded snapshot's comparable form with clock-set timestamps as "now". */
export function normTimes(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normTimes);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, CLOCK_KEYS.has(k) && isClockTime(v) ? "now" : normTimes(v)]),
  );
}
