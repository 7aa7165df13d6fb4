/**
 * md's left-symmetric layout for RAID 5 and RAID 6. Stripe s keeps P on member
 * n−1−(s mod n), Q (RAID 6) on the member after it, and data block i on the
 * (i+1)-th member after the last parity block, wrapping. Sequential reads so
 * touch every member in turn, and Q's coefficient for data block i is 2^i.
 */
export class ParityLayout {
  readonly dataPerStripe: number;

  constructor(
    readonly members: number,
    readonly parity: 1 | 2,
    readonly chunk: number,
    readonly rows: number,
  ) {
    this.dataPerStripe = members - parity;
  }

  pMember(stripe: number): number {
    return this.members - 1 - (stripe % this.members);
  }

  qMember(stripe: number): number {
    return (this.pMember(stripe) + 1) % this.members;
  }

  dataMember(stripe: number, index: number): number {
    return (this.pMember(stripe) + this.parity + index) % this.members;
  }

  /** What `member` holds in `stripe`: a data index ≥ 0, or -1 for P, -2 for Q. */
  roleIn(stripe: number, member: number): number {
    const p = this.pMember(stripe);
    const k = (member - p + this.members) % this.members;
    if (k === 0) return -1;
    if (this.parity === 2 && k === 1) return -2;
    return k - this.parity;
  }

  survives(failed: readonly boolean[]): boolean {
    let n = 0;
    for (let m = 0; m < this.members; m++) if (failed[m]) n++;
    return n <= this.parity;
  }
}
