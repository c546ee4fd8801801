/*
 * Outputs are written as new blobs BEFORE the commit that makes an instance document refer to
 * them. So a writer must collect the blobs of a commit that did not land, and must never collect
 * those of a commit that did: the snapshot would refer to outputs that are gone. In between lies a
 * commit whose reply never came (network error, timeout, closed connection): it may have landed.
 * Its blobs are kept: the outputs of the stored snapshot if it landed, unreferenced garbage if
 * not (see the README, Limits, for sweeping that). This module is that rule, for every writer.
 */
import { MongoServerError, MongoWriteConcernError } from "mongodb";

/**
 * Server error codes that refuse the write itself, for what the request is or what the document
 * would become (the document too large, an immutable or invalid field, a validator), so nothing
 * was applied. Only these: any other error, a server error included, may follow a write that
 * landed (a retried write reports the error of its retry; a write-concern error follows a write
 * that was applied).
 */
const REFUSED_WRITE_CODES: ReadonlySet<number> = new Set([
  2, // BadValue
  9, // FailedToParse
  14, // TypeMismatch
  40, // ConflictingUpdateOperators
  52, // DollarPrefixedFieldName
  56, // EmptyFieldName
  57, // DottedFieldName
  66, // ImmutableField
  121, // DocumentValidationFailure
  10334, // BSONObjectTooLarge
  17419, // the updated document would exceed the maximum document size
]);

/**
 * Is this the server's duplicate-key error (11000)? An insert that meets it did not land: a
 * document with that key exists already (someone else created it first).
 */
export function isDuplicateKey(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000;
}

/** Does this error prove that the write it reports on was not applied? */
export function writeRefused(error: unknown): boolean {
  return (
    error instanceof MongoServerError &&
    !(error instanceof MongoWriteConcernError) &&
    typeof error.code === "number" &&
    REFUSED_WRITE_CODES.has(error.code)
  );
}

/**
 * The blobs one call writes ahead of its commits. Each blob is the call's to collect again,
 * unless a commit referring to it landed or may have landed.
 */
export class PendingBlobs {
  readonly #kept = new Set<string>();

  /**
   * Runs `commit`, a write that makes a document refer to the blobs `ids`, and returns whether
   * it landed. The blobs are kept from before it is sent; a commit known not to have landed (it
   * returned false: its compare-and-set matched nothing, or its insert found the document
   * already there; or the server refused the write) gives them back. A failure without a reply
   * that proves it was refused keeps them. A refusal the adapter decides itself (a lost fence, a
   * finished workflow) comes before any commit is sent, so it never keeps anything.
   */
  async commit(ids: readonly string[], commit: () => Promise<boolean>): Promise<boolean> {
    for (const id of ids) this.#kept.add(id);
    let landed: boolean;
    try {
      landed = await commit();
    } catch (error) {
      if (writeRefused(error)) this.#giveBack(ids);
      throw error;
    }
    if (!landed) this.#giveBack(ids);
    return landed;
  }

  /** Of the blobs `written`, those no commit refers to or may refer to: the call's garbage. */
  collectable(written: readonly string[]): string[] {
    return written.filter((id) => !this.#kept.has(id));
  }

  #giveBack(ids: readonly string[]): void {
    for (const id of ids) this.#kept.delete(id);
  }
}
