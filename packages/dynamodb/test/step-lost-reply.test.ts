// A step whose transaction landed but whose reply was lost, when the resend is cancelled (the
// condition it checked no longer holds: the first send changed the head). With a header stored in
// chunks (a Completed step with a final output over the inline limit), the chunks the landed send
// points the head at must survive: they are dropped only once a re-read shows the step did not land.
import { TransactionCanceledException } from "@aws-sdk/client-dynamodb";
import { bytesEqual } from "@sayiir/persistence-core";
import { atTask, claimOrFail, patternBytes, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { intercept } from "./faults.js";
import { freshBackend } from "./helpers.js";
import { server } from "./subject.js";

const info = server();

describe.skipIf(info === null)("a step's lost reply on DynamoDB", () => {
  it("a landed Completed step with a chunked header stays readable when its resend is cancelled", async () => {
    const backend = await freshBackend();
    const id = uid("lost");
    await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }));
    const claim = await claimOrFail(backend, id, "t1", "worker-1");
    const finalOutput = patternBytes(400_000, 7);
    let injected = false;
    intercept(backend.client, "initialize", async (call, send) => {
      if (injected || call.command !== "TransactWriteItemsCommand") return send();
      injected = true;
      await send(); // lands
      const reasons = (call.input.TransactItems as unknown[]).map((_, i) => ({
        Code: i === 0 ? "ConditionalCheckFailed" : "None",
      }));
      throw new TransactionCanceledException({
        message: "injected: Transaction cancelled (the reply of a landed send was lost, its resend refused)",
        $metadata: {},
        CancellationReasons: reasons,
      });
    });
    expect(
      await backend.completeTasks([{ claim, output: text("one"), next: { kind: "Completed", finalOutput } }]),
    ).toEqual([null]);
    expect(injected).toBe(true);
    const loaded = await backend.loadSnapshot(id);
    expect(loaded.state.kind).toBe("Completed");
    expect(loaded.state.kind === "Completed" && bytesEqual(loaded.state.finalOutput, finalOutput)).toBe(true);
  });
});
