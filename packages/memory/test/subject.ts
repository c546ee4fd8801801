import {
  BaseBackend,
  type BaseBackendOptions,
  type CompletionOutcome,
  type ValidCompletion,
} from "@sayiir/persistence-core";
import type {
  ConformanceOptions,
  ConformanceSubject,
  SubjectOptions,
} from "@sayiir/persistence-core/conformance";
import { InMemoryBackend, type InMemoryBackendOptions } from "../src/index.js";

/** The memory backend needs no server: there is always a target, so this is never shown. */
export const NO_SERVER = "";

export interface MemorySubject extends ConformanceSubject {
  backend: InMemoryBackend;
}

/**
 * A fresh subject: a backend over a new store; connect() opens another backend over the same
 * store, as a second client of one database would. `extra` adds or overrides backend options.
 */
export async function createSubject(
  { maxPayloadBytes, agingMs }: SubjectOptions = {},
  extra: Partial<InMemoryBackendOptions> = {},
): Promise<MemorySubject> {
  return subjectOf(new InMemoryBackend({ maxPayloadBytes, agingMs, ...extra }));
}

/** BaseBackend's own (portable) completeTasks, which InMemoryBackend overrides. */
const portableCompleteTasks = (
  BaseBackend.prototype as unknown as {
    doCompleteTasks(this: BaseBackend, completions: readonly ValidCompletion[]): Promise<CompletionOutcome[]>;
  }
).doCompleteTasks;

/**
 * The memory backend with BaseBackend's portable completeTasks (the fenced write, then the
 * release, per completion) instead of its own one-step form. No adapter in this repository uses
 * the portable form, so this is what runs it through the whole kit. Testing only.
 */
export class PortableCompletionBackend extends InMemoryBackend {
  protected override doCompleteTasks(completions: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
    return portableCompleteTasks.call(this, completions);
  }

  override connect(options: BaseBackendOptions = {}): PortableCompletionBackend {
    return new PortableCompletionBackend({
      ...options,
      maxPayloadBytes: options.maxPayloadBytes ?? this.maxPayloadBytes,
      agingMs: options.agingMs ?? this.agingMs,
      store: this.store,
    });
  }
}

/** createSubject over a PortableCompletionBackend. */
export async function createPortableSubject(
  { maxPayloadBytes, agingMs }: SubjectOptions = {},
  extra: Partial<InMemoryBackendOptions> = {},
): Promise<MemorySubject> {
  return subjectOf(new PortableCompletionBackend({ maxPayloadBytes, agingMs, ...extra }));
}

function subjectOf(backend: InMemoryBackend): MemorySubject {
  return {
    backend,
    connect: async () => backend.connect(),
    corruptSnapshot: async (instanceId) => {
      const stored = backend.store.instances.get(instanceId);
      if (stored) stored.header = new TextEncoder().encode("not a snapshot");
    },
  };
}

export function conformanceTargets(): ConformanceOptions[] {
  return [
    { name: "memory", setup: createSubject },
    { name: "memory (portable completeTasks)", setup: createPortableSubject },
  ];
}
