import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { initChecksums } from '../../src/qcowlike/checksum.js';
import { BlockType, verifyBlock } from '../../src/qcowlike/metablock.js';
import { assembleArray, DATA_OFFSET } from '../../src/raid/index.js';
import { MirrorLayout, ParityLayout } from '../../src/raid/levels/index.js';

/** What one chunk of a member holds, as far as damaging it is concerned. */
type Held = 'data' | 'l2' | 'zero' | 'parity' | 'other';

export interface Damage {
  member: number;
  /** Offsets in the member's data area of the zeroed ranges. */
  ranges: Array<{ at: number; length: number }>;
  /** Array offset of an L2 table that one of the ranges covers. */
  l2ArrayOffset: number;
}

const key = (b: Buffer): string => createHash('sha1').update(b).digest('hex');

/**
 * Zeroes `count` runs of `runBytes` on one member of a RAID 1 (over 2) or
 * RAID 5 array holding a pool whose volume was written with `image`: runs
 * where every chunk of that member is the volume's data, an L2 table, zeroes
 * or parity, one of them over an L2 table, so that everything damaged is
 * either checked by the pool's checksums or rebuilt by scrub. The member is
 * the one that normally serves that L2 table's reads.
 */
export async function damageOneMember(paths: string[], image: Buffer, chunk: number, count: number, runBytes: number): Promise<Damage> {
  await initChecksums();
  const { array } = await assembleArray(paths, { readOnly: true });
  const g = array.geometry;
  const whole = Buffer.alloc(array.size);
  await array.read(whole, 0);
  await array.close();
  const dataKeys = new Set<string>();
  for (let o = 0; o + chunk <= image.length; o += chunk) dataKeys.add(key(image.subarray(o, o + chunk)));
  const classify = (arrayOffset: number): Held => {
    const b = whole.subarray(arrayOffset, arrayOffset + chunk);
    if (dataKeys.has(key(b))) return 'data';
    if (verifyBlock(b, BlockType.L2, undefined) === null) return 'l2';
    return b.every((x) => x === 0) ? 'zero' : 'other';
  };
  const mirror = g.level === 1 ? new MirrorLayout(g.members, g.copies, g.chunk, g.rows) : undefined;
  const parity = g.level === 5 ? new ParityLayout(g.members, 1, g.chunk, g.rows) : undefined;
  if (!mirror && !parity) throw new Error('damageOneMember handles RAID 1 and RAID 5');
  /** What member m holds at row `row`. */
  const held = (m: number, row: number): { what: Held; arrayOffset: number } => {
    if (mirror) {
      const c = mirror.chunkAt(m, row);
      return c < 0 ? { what: 'other', arrayOffset: -1 } : { what: classify(c * chunk), arrayOffset: c * chunk };
    }
    const role = parity!.roleIn(row, m);
    if (role < 0) return { what: 'parity', arrayOffset: -1 };
    const a = (row * parity!.dataPerStripe + role) * chunk;
    return a + chunk > array.size ? { what: 'other', arrayOffset: -1 } : { what: classify(a), arrayOffset: a };
  };
  // The first L2 table, and the member a normal read of it goes to.
  let l2 = -1;
  for (let a = 0; a < array.size && l2 < 0; a += chunk) if (classify(a) === 'l2') l2 = a;
  if (l2 < 0) throw new Error('no L2 table found on the array');
  const c = l2 / chunk;
  const member = mirror ? mirror.member(c, c % mirror.copies) : parity!.dataMember(Math.floor(c / parity!.dataPerStripe), c % parity!.dataPerStripe);
  const l2Row = mirror ? mirror.row(c, c % mirror.copies) : Math.floor(c / parity!.dataPerStripe);

  const rowsPerRun = runBytes / chunk;
  const fits = (r0: number): boolean => {
    let data = 0;
    for (let r = r0; r < r0 + rowsPerRun; r++) {
      if (r >= g.rows) return false;
      const h = held(member, r).what;
      if (h === 'other') return false;
      if (h === 'data') data++;
    }
    return data > 0;
  };
  // The run over the L2 table: the table at its start if the rows after it fit, else the table alone.
  const l2Start = [l2Row, l2Row - rowsPerRun + 1, l2Row - Math.floor(rowsPerRun / 2)].find((r) => r >= 0 && fits(r));
  const ranges: Array<{ at: number; length: number }> = [l2Start === undefined ? { at: l2Row * chunk, length: chunk } : { at: l2Start * chunk, length: runBytes }];
  const taken = (r: number): boolean => ranges.some((x) => r * chunk < x.at + x.length && x.at < r * chunk + runBytes);
  // The others spread over the member: one candidate per stretch, far from the runs taken.
  const stretch = Math.floor(g.rows / count);
  for (let k = 0; k < count && ranges.length < count; k++) {
    for (let r = k * stretch; r < (k + 1) * stretch; r++) {
      if (!taken(r) && fits(r)) {
        ranges.push({ at: r * chunk, length: runBytes });
        break;
      }
    }
  }
  if (ranges.length < count) throw new Error(`found only ${ranges.length} runs to damage`);
  const damage = { member, ranges, l2ArrayOffset: l2 };
  zeroAgain(paths, damage);
  return damage;
}

/** Zeroes the runs of `damage` (again): the same damage after a repair. */
export function zeroAgain(paths: string[], damage: Damage): void {
  const fd = fs.openSync(paths[damage.member]!, 'r+');
  try {
    for (const r of damage.ranges) fs.writeSync(fd, Buffer.alloc(r.length), 0, r.length, DATA_OFFSET + r.at);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A digest of every member file, to prove a read-only open wrote nothing. */
export function memberDigests(paths: string[]): string[] {
  return paths.map((p) => key(fs.readFileSync(p)));
}
