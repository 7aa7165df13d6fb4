/**
 * What an engine (the I/O logic of one family of levels) needs from the array
 * core, and what it gives back. Member offsets here are within the member's
 * data area; the core adds the header.
 */
export interface MemberIO {
  readonly members: number;
  readonly chunk: number;
  /** The member holds current data at `row` (active, or rebuilt past it). */
  readable(member: number, row: number): boolean;
  /** The member takes writes (active or being rebuilt). */
  writable(member: number): boolean;
  /** Member I/O; a member error fails the member and rejects with MemberLost. */
  read(member: number, buf: Uint8Array, offset: number): Promise<void>;
  write(member: number, buf: Uint8Array, offset: number): Promise<void>;
  zero(member: number, offset: number, length: number): Promise<void>;
  /** A chunk-sized, 4-byte aligned scratch buffer from the array's pool; give it back. */
  take(): Buffer;
  give(b: Buffer): void;
}

/** One place where the copies of the data disagree. */
export interface Mismatch {
  /** Array byte range the disagreement covers (a chunk or a stripe). */
  offset: number;
  length: number;
  /** Members whose content differs from what the array settled on (or parity members if it cannot tell). */
  members: number[];
  repaired: boolean;
}

export interface ScrubPart {
  mismatches: Mismatch[];
  /** Array bytes in the rows that could not be compared: no second copy, no parity left to check. */
  unchecked: number;
}

export interface Engine {
  /** Bytes of data the layout holds. */
  readonly capacity: number;
  /** Rows of members touched by an array byte range: [first, end). */
  rowsOf(offset: number, length: number): [number, number];
  read(buf: Uint8Array, offset: number): Promise<void>;
  write(buf: Uint8Array, offset: number): Promise<void>;
  zero(offset: number, length: number): Promise<void>;
  /**
   * Compares copies / parity over rows [r0, r1); with `repair` makes them
   * agree. Where members are out, compares what redundancy remains, and counts
   * as unchecked the array bytes that have none left.
   */
  scrub(r0: number, r1: number, repair: boolean): Promise<ScrubPart>;
  /** Recreates everything `member` holds in rows [r0, r1) from the other members. */
  rebuild(member: number, r0: number, r1: number): Promise<void>;
  copies(offset: number, length: number): number;
  readCopy(buf: Uint8Array, offset: number, copy: number): Promise<void>;
  /**
   * Rewrites every copy of the range that differs from `good`; resolves to the
   * members rewritten. With `dryRun` nothing is written: it resolves to the
   * members that would be (a read-only array records them as pending).
   */
  repair(good: Uint8Array, offset: number, dryRun?: boolean): Promise<Set<number>>;
}

/** A member failed under a request: the core retries the request on the degraded array. */
export class MemberLost extends Error {
  constructor(
    readonly member: number,
    cause: unknown,
  ) {
    super(`member ${member} failed`, { cause });
    this.name = 'MemberLost';
  }
}

/**
 * Waits for every member request of a step, then rejects with the first
 * failure. Promise.all would reject early and leave writes in flight while
 * the stripe lock is released and the request retried.
 */
export async function settleAll(jobs: Promise<void>[]): Promise<void> {
  if (jobs.length === 1) return jobs[0];
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
