import type { PendingEvent } from "@sayiir/persistence-core";

/** The events of one instance: a FIFO queue per event name, and the counter that numbers them. */
interface InstanceEvents {
  /** The sequence of the last event sent to the instance, whatever its name (0: none yet). */
  lastSequence: number;
  /** Event name -> its pending events, oldest first. */
  queues: Map<string, PendingEvent[]>;
}

/**
 * The pending events of every instance, the in-memory counterpart of an events table. Each event
 * stays until the fenced write that moves its workflow past a wait consumes it (always the oldest
 * of its name), a write that makes the workflow terminal drops it, or the instance is deleted.
 * Byte values are kept as given: the backend hands in and out private copies.
 */
export class EventQueues {
  readonly #instances = new Map<string, InstanceEvents>();

  /** Appends an event to the queue of its name; returns its sequence (per instance, across names). */
  append(instanceId: string, eventName: string, payload: Uint8Array, sentAt: number): number {
    let events = this.#instances.get(instanceId);
    if (events === undefined) {
      events = { lastSequence: 0, queues: new Map() };
      this.#instances.set(instanceId, events);
    }
    let queue = events.queues.get(eventName);
    if (queue === undefined) {
      queue = [];
      events.queues.set(eventName, queue);
    }
    const sequence = ++events.lastSequence;
    queue.push({ eventName, sequence, payload, sentAt });
    return sequence;
  }

  /** The oldest pending event of that name, or undefined. */
  oldest(instanceId: string, eventName: string): PendingEvent | undefined {
    return this.#instances.get(instanceId)?.queues.get(eventName)?.[0];
  }

  /** Removes the oldest pending event of that name (the one a write consumes). */
  consumeOldest(instanceId: string, eventName: string): void {
    const queues = this.#instances.get(instanceId)?.queues;
    const queue = queues?.get(eventName);
    queue?.shift();
    if (queue?.length === 0) queues?.delete(eventName);
  }

  /** Drops every pending event of the instance (it became terminal); the counter stays. */
  drop(instanceId: string): void {
    this.#instances.get(instanceId)?.queues.clear();
  }

  /** Forgets the instance: its pending events and its counter (deleteSnapshot). */
  delete(instanceId: string): void {
    this.#instances.delete(instanceId);
  }

  /** Every pending event of the instance, oldest first (by sequence, across names). */
  pending(instanceId: string): PendingEvent[] {
    const queues = this.#instances.get(instanceId)?.queues;
    if (queues === undefined) return [];
    return [...queues.values()].flat().sort((a, b) => a.sequence - b.sequence);
  }
}
