import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inProcess } from './in-process.js';
import { buildCli, strata } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-check-salvage');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;

const MARK = 'STRATA-SALVAGE!!';

/** A file pool with a 1M volume of marked data, one page of which is damaged on the pool file behind its back. */
async function damagedPool(): Promise<{ home: string; image: Buffer; damagedAt: number }> {
  const home = path.join(scratch.dir, `home${n++}`);
  await inProcess(home, ['pool', 'create', 'p0', '--size', '256M']);
  const image = Buffer.alloc(1 << 20);
  for (let i = 0; i < image.length; i += 16) image.write(MARK, i, 'latin1');
  const src = path.join(home, 'image.raw');
  fs.writeFileSync(src, image);
  await inProcess(home, ['import', 'p0/v', src]);
  const poolFile = path.join(home, 'p0.pool');
  const data = fs.readFileSync(poolFile);
  const start = data.indexOf(MARK, 0, 'latin1');
  expect(start).toBeGreaterThanOrEqual(0);
  const fd = fs.openSync(poolFile, 'r+');
  // The volume's data lies in order from `start`: its third page, at volume offset 8192, is damaged.
  fs.writeSync(fd, Buffer.from('garbage!'), 0, 8, start + 8192 + 100);
  fs.closeSync(fd);
  return { home, image, damagedAt: 8192 };
}

describe('damaged data', () => {
  it('check --repair that repairs nothing says why, in one line', async () => {
    const { home } = await damagedPool();
    const r = strata(home, ['pool', 'check', 'p0', '--repair']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^strata: pool 'p0' has 1 unrepaired problem; nothing repaired: 1 block fails the checksum and a file pool keeps no second copy to rewrite from \(restore, or export --salvage what verifies\)\n$/,
    );
    const j = JSON.parse(strata(home, ['--json', 'pool', 'check', 'p0', '--repair']).stdout) as { unrepairedBecause: string };
    expect(j.unrepairedBecause).toMatch(/^1 block fails the checksum/);
  });

  it('export --salvage writes what verifies and zero-fills and reports what does not', async () => {
    const { home, image, damagedAt } = await damagedPool();
    const out = path.join(home, 'out.raw');
    // Without --salvage the export fails and leaves nothing.
    expect(strata(home, ['export', 'p0/v', out]).code).toBe(1);
    expect(fs.existsSync(out)).toBe(false);
    const r = strata(home, ['export', 'p0/v', out, '--salvage']);
    expect(r.code).toBe(0);
    const warnings = r.stderr.trimEnd().split('\n');
    expect(warnings.length).toBeGreaterThanOrEqual(1);
    for (const w of warnings) expect(w).toMatch(/^strata: warning: p0\/v: \S+ at offset \d+ does not verify; zero-filled in /);
    expect(r.stdout).toMatch(/, \S+ unreadable \(zero-filled\)\n$/);
    const j = JSON.parse(strata(home, ['--json', 'export', 'p0/v', out, '--force', '--salvage']).stdout) as { unreadable: { offset: number; length: number }[]; unreadableBytes: number };
    expect(j.unreadable.length).toBeGreaterThanOrEqual(1);
    const back = fs.readFileSync(out);
    expect(back.length).toBe(image.length);
    // Every page outside the reported ranges is as imported; inside them, zeroes; the damaged page is among them.
    const inBad = (at: number): boolean => j.unreadable.some((u) => at >= u.offset && at < u.offset + u.length);
    expect(inBad(damagedAt)).toBe(true);
    for (let at = 0; at < image.length; at += 4096) {
      const page = back.subarray(at, at + 4096);
      if (inBad(at)) expect(page.every((b) => b === 0)).toBe(true);
      else expect(page.equals(image.subarray(at, at + 4096))).toBe(true);
    }
    expect(j.unreadableBytes).toBe(j.unreadable.reduce((s, u) => s + u.length, 0));
    expect(j.unreadableBytes).toBeLessThan(image.length / 4);
    // To stdout too.
    const piped = strata(home, ['export', 'p0/v', '-', '--salvage']);
    expect(piped.code).toBe(0);
    expect(Buffer.from(piped.stdout, 'latin1').length).toBeGreaterThan(0);
  });
});
