/**
 * Where the replicas of a chunk live for the striped and mirrored levels: md's
 * RAID 10 "near" layout. Slots are numbered row by row across the members
 * (slot j is member j mod n, row ⌊j / n⌋) and chunk c fills the k consecutive
 * slots c·k … c·k+k−1. k = 1 is RAID 0, k = n is RAID 1.
 */
export class MirrorLayout {
  /** Chunks the array holds. */
  readonly chunks: number;

  constructor(
    readonly members: number,
    readonly copies: number,
    readonly chunk: number,
    readonly rows: number,
  ) {
    this.chunks = Math.floor((rows * members) / copies);
  }

  member(chunk: number, replica: number): number {
    return (chunk * this.copies + replica) % this.members;
  }

  row(chunk: number, replica: number): number {
    return Math.floor((chunk * this.copies + replica) / this.members);
  }

  /** The chunk whose replica sits on `member` at `row`, or -1 past the end. */
  chunkAt(member: number, row: number): number {
    const c = Math.floor((row * this.members + member) / this.copies);
    return c < this.chunks ? c : -1;
  }

  /** Whether some replica of every chunk is on a member not in `failed`. */
  survives(failed: readonly boolean[]): boolean {
    for (let c = 0; c < this.members; c++) {
      let alive = false;
      for (let r = 0; r < this.copies && !alive; r++) alive = !failed[this.member(c, r)];
      if (!alive) return false;
    }
    return true;
  }
}
