import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { layerPattern, sliceRuns } from '../../bench/chain-layout.js';
import { parseChainsArgs } from '../../bench/chains.js';
import { iopsLog } from '../../bench/chain-online.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

describe('the chain benchmark layout', () => {
  it('writes every block exactly once, in runs of one layer, the layers sharing the blocks evenly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 1000 }), (blocks, d, seed) => {
        const depth = Math.min(d, blocks);
        const layers = sliceRuns(blocks, depth, seed);
        expect(layers).toHaveLength(depth);
        // Plain checks inside the loops (an expect per block is what would make this slow), one verdict after.
        const owner = new Int32Array(blocks).fill(-1);
        const faults: string[] = [];
        layers.forEach((runs, k) => {
          let end = -1;
          for (const r of runs) {
            if (r.count < 1) faults.push(`layer ${k}: an empty run`);
            // Runs are maximal and in order: two neighbouring blocks of one layer are never two runs.
            if (r.block <= end) faults.push(`layer ${k}: run at ${r.block} does not start past the previous one's end ${end}`);
            for (let b = r.block; b < r.block + r.count; b++) {
              if (owner[b] !== -1) faults.push(`block ${b} in layers ${owner[b]} and ${k}`);
              owner[b] = k;
            }
            end = r.block + r.count;
          }
        });
        owner.forEach((k, b) => {
          if (k < 0) faults.push(`block ${b} in no layer`);
        });
        expect(faults.slice(0, 5)).toEqual([]);
        const shares = layers.map((runs) => runs.reduce((n, r) => n + r.count, 0));
        expect(Math.max(...shares) - Math.min(...shares)).toBeLessThanOrEqual(1);
      }),
      { numRuns: 200 },
    );
  });

  it('deals the same layout from the same seed and another from another seed', () => {
    expect(sliceRuns(4096, 16, 3)).toEqual(sliceRuns(4096, 16, 3));
    expect(sliceRuns(4096, 16, 3)).not.toEqual(sliceRuns(4096, 16, 4));
  });

  it('fills no layer with zeroes, so a block read from nowhere shows', () => {
    for (let k = 0; k < 1000; k++) {
      expect(layerPattern(k)).toBeGreaterThanOrEqual(1);
      expect(layerPattern(k)).toBeLessThanOrEqual(255);
    }
    expect(layerPattern(0)).not.toBe(layerPattern(1));
  });

  it('refuses a depth with more layers than blocks', () => {
    expect(() => sliceRuns(8, 9, 1)).toThrow(/depth 9/);
  });
});

describe('bench:chains options', () => {
  it('has the full defaults and a quick mode', () => {
    const full = parseChainsArgs([]);
    const quick = parseChainsArgs(['--quick']);
    if (full === 'help' || quick === 'help') throw new Error('no help asked for');
    expect(full.depths).toEqual([1, 16, 64, 256]);
    expect(full.size).toBe(2 ** 30);
    expect(full.rounds).toBe(3);
    expect(full.createSizes).toEqual([2 ** 30, 2 ** 40]);
    expect(full.parts).toEqual(['create', 'depth', 'online']);
    expect(quick.depths).toEqual([1, 16, 64]);
    expect(quick.size).toBeLessThan(full.size);
    expect(quick.runtimeSec).toBeLessThan(full.runtimeSec);
    // An explicit value wins over quick's.
    const mixed = parseChainsArgs(['--quick', '--depths', '1,256', '--size', '64M']);
    if (mixed === 'help') throw new Error('no help asked for');
    expect(mixed.depths).toEqual([1, 256]);
    expect(mixed.size).toBe(64 * 2 ** 20);
  });

  it('refuses what cannot be measured, in one line naming the option', () => {
    expect(() => parseChainsArgs(['--parts', 'depth,speed'])).toThrow(/unknown part 'speed'/);
    expect(() => parseChainsArgs(['--grain', '3K'])).toThrow(/--grain/);
    expect(() => parseChainsArgs(['--size', '100K', '--grain', '64K'])).toThrow(/--size/);
    expect(() => parseChainsArgs(['--size', '1M', '--grain', '64K', '--depths', '1,17'])).toThrow(/depth 17/);
    expect(() => parseChainsArgs(['--depths', '1,16,16'])).toThrow(/twice/);
    expect(() => parseChainsArgs(['--rounds', '0'])).toThrow(/--rounds/);
    expect(parseChainsArgs(['--help'])).toBe('help');
  });
});

describe("fio's IOPS log", () => {
  it('reads the window end and the IOPS of each line', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'strata-iops-')), 'x_iops.1.log');
    fs.writeFileSync(file, '250, 1200, 0, 4096, 0\n500, 1300, 0, 4096, 0\n');
    expect(iopsLog(file)).toEqual([
      { endMs: 250, iops: 1200 },
      { endMs: 500, iops: 1300 },
    ]);
    fs.rmSync(path.dirname(file), { recursive: true });
    expect(iopsLog(file)).toEqual([]);
  });
});
