// A commit whose outcome is unknown: the compare-and-set (or insert) of the instance document
// reached the server and landed, but its reply was lost (a network error, a timeout, a closed
// connection). The outputs it refers to were written before it, as new blobs; they must be kept,
// or the committed snapshot would refer to outputs that are gone. Only a commit known not to
// have landed (it matched nothing, or the server refused the write itself) gives its blobs back
// to be collected.
//
// Deterministic: the backend's testing-only fault seam (option `faults`) is armed so that the
// next commit on the snapshots collection (an updateOne with `v` in its filter, or an
// insertOne) performs the real write and then throws a network error (or is sent in a form the
// server refuses: the server's own refusal of a write it did not apply).
import {
  type ClaimedTask,
  ErrorCode,
  markTaskCompleted,
  type PersistentBackend,
  type TaskClaim,
} from "@sayiir/persistence-core";
import {
  atTask,
  awaiting,
  claimOrFail,
  comparable,
  finished,
  patternBytes,
  rejection,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import {
  type Collection,
  type Document,
  type MongoClient,
  MongoNetworkError,
  MongoServerError,
} from "mongodb";
import { describe, expect, it } from "vitest";
import { connectForSuite, createSubject, DATABASE, type FaultSeam, faultSeam, server } from "./subject.js";

/** What the next commit on the collection does instead of simply running. */
type Fate =
  /** The write lands; the reply is lost. */
  | "lands, reply lost"
  /** The write never reaches the server. */
  | "lost before the server"
  /** The server refuses the write (a real refusal, with its own error code). */
  | "refused by the server";

/**
 * Arms the next commit on `collection` (an updateOne with `v` in its filter, or an insertOne) to
 * meet `fate`. Returns what happened, to check the hook fired.
 */
function nextCommit(seam: FaultSeam, collection: string, fate: Fate): { fired: () => boolean } {
  let armed = true;
  let fired = false;
  const lost = () => new MongoNetworkError("connection closed (injected: the reply was lost)");
  seam.hook = (call, proceed) => {
    if (!armed || call.collection !== collection) return proceed();
    if (call.method === "updateOne") {
      const [filter, update] = call.args as [Document, Document];
      if (!("v" in filter)) return proceed();
      armed = false;
      fired = true;
      if (fate === "lost before the server") return Promise.reject(lost());
      if (fate === "refused by the server") {
        // An update the server must refuse (it would change _id): nothing is applied.
        return proceed([filter, { $set: { ...update.$set, _id: uid("moved") } }]);
      }
      return (async () => {
        const result = (await proceed()) as { matchedCount: number };
        expect(result.matchedCount).toBe(1);
        throw lost();
      })();
    }
    if (call.method !== "insertOne") return proceed();
    armed = false;
    fired = true;
    if (fate === "lost before the server") return Promise.reject(lost());
    if (fate === "refused by the server") {
      return Promise.reject(new Error("no server refusal is injected on insert"));
    }
    return (async () => {
      await proceed();
      throw lost();
    })();
  };
  return { fired: () => fired };
}

describe.skipIf(server === null)("a commit whose reply is lost keeps the outputs it refers to", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });

  /**
   * Runs `write` (given what `setup` returned) against a fresh subject with the next commit
   * meeting `fate`; `check` then sees the error and the backend (the wrapper removed).
   */
  async function scenario<S>(
    fate: Fate,
    setup: (backend: PersistentBackend, id: string) => Promise<S>,
    write: (backend: PersistentBackend, id: string, setUp: S) => Promise<unknown>,
    check: (backend: PersistentBackend, id: string, error: unknown, outputs: Collection) => Promise<void>,
  ): Promise<void> {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    const backend = subject.backend;
    try {
      const id = uid();
      const setUp = await setup(backend, id);
      const window = nextCommit(seam, `${subject.prefix}snapshots`, fate);
      const error = await rejection(write(backend, id, setUp));
      seam.hook = null;
      expect(window.fired()).toBe(true);
      expect(error).toMatchObject({ code: ErrorCode.Backend });
      await check(backend, id, error, client.db(DATABASE).collection(`${subject.prefix}outputs`));
    } finally {
      seam.hook = null;
      await backend.close();
      await subject.cleanup?.();
    }
  }

  const claimed = (backend: PersistentBackend, id: string, taskId: string): Promise<TaskClaim> =>
    claimOrFail(backend, id, taskId, `worker-${taskId}`, 60_000);

  /** The outputs of the stored snapshot, by task id, as text. */
  const outputsOf = async (backend: PersistentBackend, id: string): Promise<Record<string, string>> => {
    const loaded = await backend.loadSnapshot(id);
    if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
    return Object.fromEntries(
      Object.values(loaded.state.completedTasks).map((r) => [r.taskId, new TextDecoder().decode(r.output)]),
    );
  };

  it("saveTaskResult: the result landed with its reply lost; loadSnapshot returns it", async () => {
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      },
      (b, id) => b.saveTaskResult(id, "t2", text("two")),
      async (b, id) => {
        expect(await outputsOf(b, id)).toEqual({ t1: "one", t2: "two" });
      },
    );
  });

  it("saveTaskResult fenced: the result landed with its reply lost; loadSnapshot returns it", async () => {
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t1"));
        return claimed(b, id, "t1");
      },
      (b, id, claim) => b.saveTaskResult(id, "t1", text("fenced"), { claim }),
      async (b, id) => {
        expect(await outputsOf(b, id)).toEqual({ t1: "fenced" });
      },
    );
  });

  it("saveSnapshot over a stored snapshot: it landed with its reply lost; loadSnapshot returns every output", async () => {
    const next = (id: string) =>
      atTask(id, "t4", { completed: { t1: text("1"), t2: text("2"), t3: text("3") } });
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t2", { completed: { t1: text("old") } }));
      },
      (b, id) => b.saveSnapshot(next(id)),
      async (b, id) => {
        expect(comparable(await b.loadSnapshot(id))).toEqual(comparable(next(id)));
      },
    );
  });

  it("saveSnapshot of a new instance (insert): it landed with its reply lost; loadSnapshot returns every output", async () => {
    const first = (id: string) => atTask(id, "t3", { completed: { t1: text("1"), t2: text("2") } });
    await scenario(
      "lands, reply lost",
      async () => undefined,
      (b, id) => b.saveSnapshot(first(id)),
      async (b, id) => {
        expect(comparable(await b.loadSnapshot(id))).toEqual(comparable(first(id)));
      },
    );
  });

  it("saveSnapshot with a large initial input (stored as a blob): it landed with its reply lost; loadSnapshot returns it", async () => {
    // An initial input over the inline limit (4 MiB) is a blob of its own.
    const big = new Uint8Array(5 * 1024 * 1024).fill(7);
    const snapshot = (id: string) => atTask(id, "t2", { completed: { t1: text("1") }, initialInput: big });
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t1"));
      },
      (b, id) => b.saveSnapshot(snapshot(id)),
      async (b, id) => {
        expect(comparable(await b.loadSnapshot(id))).toEqual(comparable(snapshot(id)));
      },
    );
  });

  it("saveSnapshot with a large header (stored as a blob): it landed with its reply lost; loadSnapshot returns it", async () => {
    // A final output over the inline limit (4 MiB) puts the header in a blob of its own.
    const big = new Uint8Array(5 * 1024 * 1024).fill(9);
    const snapshot = (id: string) => finished(id, { kind: "Completed", finalOutput: big });
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t1"));
      },
      (b, id) => b.saveSnapshot(snapshot(id)),
      async (b, id) => {
        expect(comparable(await b.loadSnapshot(id))).toEqual(comparable(snapshot(id)));
      },
    );
  });

  it("completeTasks: the commit landed with its reply lost; loadSnapshot returns every output", async () => {
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "a"));
        return [await claimed(b, id, "a"), await claimed(b, id, "b")];
      },
      (b, _id, claims) =>
        b.completeTasks(claims.map((claim) => ({ claim, output: text(`out-${claim.taskId}`) }))),
      async (b, id) => {
        expect(await outputsOf(b, id)).toEqual({ a: "out-a", b: "out-b" });
      },
    );
  });

  it("sendEvent with a payload stored as a blob: it landed with its reply lost; the event is pending with its payload, and a retry sends it again", async () => {
    const big = patternBytes(64 * 1024, 4);
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(awaiting(id, "e", "t1"));
      },
      (b, id) => b.sendEvent(id, "e", big),
      async (b, id) => {
        const [event] = await b.loadPendingEvents(id);
        expect(event?.sequence).toBe(1);
        expect(Buffer.compare(event?.payload ?? new Uint8Array(), big)).toBe(0);
        // sendEvent has no idempotency key: a caller that retries after a lost reply sends a
        // second event (the next sequence); the runtime must tolerate or avoid the duplicate.
        expect(await b.sendEvent(id, "e", big)).toBe(2);
        expect((await b.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([1, 2]);
      },
    );
  });

  it("saveSnapshot consuming an event: it landed with its reply lost; the event is consumed, a retry says Conflict", async () => {
    const wait = (id: string) => awaiting(id, "e", "t1");
    const past = (id: string) => markTaskCompleted(wait(id), "t1", text("done"));
    let held: ClaimedTask | undefined;
    const write = (b: PersistentBackend, id: string) =>
      b.saveSnapshot(past(id), { claim: held?.claim, consumeEvent: held?.event });
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(wait(id));
        await b.sendEvent(id, "e", patternBytes(64 * 1024, 2));
        [held] = await b.claimAvailableTasks("w", 1, 60_000);
        expect(held?.event).toEqual({ eventName: "e", sequence: 1 });
      },
      write,
      async (b, id) => {
        const loaded = comparable(await b.loadSnapshot(id)) as { state: unknown };
        expect(loaded.state).toEqual((comparable(past(id)) as { state: unknown }).state);
        expect(await b.loadPendingEvents(id)).toEqual([]);
        // The event is consumed once: the retry of a write whose reply was lost is refused.
        expect(await rejection(write(b, id))).toMatchObject({ code: ErrorCode.Conflict });
      },
    );
  });

  it("cancelWorkflow: it landed with its reply lost; the workflow is Cancelled and a retry says Conflict", async () => {
    await scenario(
      "lands, reply lost",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
        await b.sendEvent(id, "e", text("dropped"));
      },
      (b, id) => b.cancelWorkflow(id),
      async (b, id) => {
        expect((await b.loadSnapshot(id)).state.kind).toBe("Cancelled");
        expect(await b.loadPendingEvents(id)).toEqual([]);
        expect(await rejection(b.cancelWorkflow(id))).toMatchObject({ code: ErrorCode.Conflict });
      },
    );
  });

  it("a commit lost before reaching the server leaves unreferenced blobs, which the README's sweep removes", async () => {
    await scenario(
      "lost before the server",
      async (b, id) => {
        await b.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      },
      (b, id) => b.saveTaskResult(id, "t2", text("two")),
      async (b, id, _error, outputs) => {
        // Nothing landed: the stored state is whole. The new output is unreferenced garbage.
        expect(await outputsOf(b, id)).toEqual({ t1: "one" });
        expect(await outputs.countDocuments({ s: id })).toBe(2);
        // The sweep of the README (Limits), while nothing writes the instance.
        const doc = await client
          .db(DATABASE)
          .collection<{ _id: string; r?: Array<{ g: string }>; hg?: string; ig?: string }>(
            outputs.collectionName.replace(/outputs$/, "snapshots"),
          )
          .findOne({ _id: id });
        const referenced = [
          ...(doc?.r ?? []).map((e) => e.g),
          ...[doc?.hg, doc?.ig].filter((g): g is string => g !== undefined),
        ];
        await outputs.deleteMany({ s: id, g: { $nin: referenced } });
        expect(await outputs.countDocuments({ s: id })).toBe(1);
        expect(await outputsOf(b, id)).toEqual({ t1: "one" });
      },
    );
  });

  describe("a commit the server refused (nothing applied) gives its blobs back to be collected", () => {
    const refused = async (b: PersistentBackend, id: string, error: unknown, outputs: Collection) => {
      expect((error as Error).cause).toBeInstanceOf(MongoServerError);
      expect(((error as Error).cause as MongoServerError).code).toBe(66); // ImmutableField
      // The stored state is the one before the call, and only its outputs are stored.
      expect(await outputsOf(b, id)).toEqual({ t1: "one" });
      expect(await outputs.countDocuments({ s: id })).toBe(1);
    };
    const setup = async (b: PersistentBackend, id: string) => {
      await b.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
    };

    it("saveTaskResult", async () => {
      await scenario(
        "refused by the server",
        setup,
        (b, id) => b.saveTaskResult(id, "t2", text("two")),
        refused,
      );
    });

    it("saveSnapshot", async () => {
      await scenario(
        "refused by the server",
        setup,
        (b, id) => b.saveSnapshot(atTask(id, "t3", { completed: { t1: text("new"), t2: text("two") } })),
        refused,
      );
    });

    it("sendEvent (payload stored as a blob)", async () => {
      await scenario(
        "refused by the server",
        setup,
        (b, id) => b.sendEvent(id, "e", patternBytes(64 * 1024, 6)),
        async (b, id, error, outputs) => {
          await refused(b, id, error, outputs);
          expect(await b.loadPendingEvents(id)).toEqual([]);
        },
      );
    });

    it("completeTasks", async () => {
      await scenario(
        "refused by the server",
        async (b, id) => {
          await setup(b, id);
          return claimed(b, id, "t2");
        },
        (b, _id, claim) => b.completeTasks([{ claim, output: text("two") }]),
        refused,
      );
    });
  });
});
