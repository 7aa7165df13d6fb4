import { expect } from 'vitest';
import { MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import type { Volume } from '../../src/qcowlike/index.js';
import { createArray, DATA_OFFSET, memberDataNeeded, type RaidArray, type RaidLevel } from '../../src/raid/index.js';

export interface LevelCase {
  level: RaidLevel;
  members: number;
  copies?: number;
  /** Members that can be lost at once. */
  tolerates: number;
}

/** Every level in small shapes, including RAID 10 with a member count that is not a multiple of the copies. */
export const LEVELS: LevelCase[] = [
  { level: 0, members: 3, tolerates: 0 },
  { level: 1, members: 3, tolerates: 2 },
  { level: 5, members: 4, tolerates: 1 },
  { level: 6, members: 5, tolerates: 2 },
  { level: 10, members: 4, copies: 2, tolerates: 1 },
  { level: 10, members: 5, copies: 3, tolerates: 2 },
];

export function label(c: LevelCase): string {
  return `RAID ${c.level}${c.copies ? ` (${c.copies} copies)` : ''} over ${c.members}`;
}

export const CHUNK = 4096;

export function memberSize(c: LevelCase, size: number, chunk = CHUNK): number {
  return DATA_OFFSET + memberDataNeeded(c.level, c.members, chunk, size, c.copies ?? 2);
}

export async function memoryArray(c: LevelCase, size: number, opts: { chunk?: number; wrap?: (dev: MemoryDevice, i: number) => BlockDevice; bitmapRegion?: number } = {}): Promise<{ array: RaidArray; members: BlockDevice[] }> {
  const chunk = opts.chunk ?? CHUNK;
  const ms = memberSize(c, size, chunk);
  const members = Array.from({ length: c.members }, (_, i) => {
    const mem = new MemoryDevice({ size: ms, name: `m${i}` });
    return opts.wrap ? opts.wrap(mem, i) : mem;
  });
  const array = await createArray({ level: c.level, members, chunk, size, ...(c.copies ? { copies: c.copies } : {}), bitmapRegion: opts.bitmapRegion ?? chunk * 4, name: 'test' });
  return { array, members };
}

/** Member sets of size k (all of them), to fail together. */
export function subsets(n: number, k: number): number[][] {
  if (k === 0) return [[]];
  const out: number[][] = [];
  const rec = (start: number, acc: number[]): void => {
    if (acc.length === k) {
      out.push([...acc]);
      return;
    }
    for (let i = start; i < n; i++) rec(i + 1, [...acc, i]);
  };
  rec(0, []);
  return out;
}

/** A run of one repeated byte written into a volume. */
export interface Fill {
  p: number;
  at: number;
  len: number;
}

/** Reads each fill back from the volume and expects exactly its byte. */
export async function expectFills(vol: Volume, fills: readonly Fill[]): Promise<void> {
  for (const b of fills) {
    const back = Buffer.alloc(b.len);
    await vol.read(back, b.at);
    expect(back.equals(Buffer.alloc(b.len, b.p)), `pattern ${b.p.toString(16)} at ${b.at / 2 ** 20}M`).toBe(true);
  }
}
