import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServe, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { buildCli, ok, strata } from './strata.js';

/**
 * Every RAID verb, run once on a pool nobody serves (the CLI assembles the
 * array itself) and once on the same pool while `strata serve` holds it (the
 * CLI sends the verb over the control socket): stdout must be the same, human
 * and --json, and so must stderr but for progress bars and the one line only
 * a server says (its rebuild goes on in the background).
 */
const { dir, cleanup } = scratchDir('served-raid');
const home = path.join(dir, 'h');
const file = (name: string): string => path.join(dir, name);

/** What changes from one run to the next: the superblocks' event count, the write-intent bitmap's dirty regions, a new member's UUID. */
function stable(text: string): string {
  return text
    .replace(/[0-9a-f]{32}/g, 'UUID')
    .replace(/events \d+/g, 'events N')
    .replace(/"events": \d+/g, '"events": N')
    .replace(/dirty regions \d+/g, 'dirty regions N')
    .replace(/"dirtyRegions": \d+/g, '"dirtyRegions": N');
}

/**
 * stderr without what is about timing or where the work ran: progress lines,
 * the server's background-rebuild hint, and the warnings of assembling the
 * array (in-process each command assembles it; a server did once, at start).
 */
function said(text: string): string {
  return text
    .split('\n')
    .filter((l) => !/^(rebuilding|scrubbing): \d+%/.test(l) && !l.startsWith('rebuilding in the background') && !l.startsWith('warning: '))
    .join('\n');
}

/**
 * One round of every verb, named the one way (POOL first), leaving the array
 * as it found it (m0 and y.img) so that the next round prints the same.
 */
function round(json: boolean): string[] {
  fs.rmSync(file('x.img'), { force: true });
  const verbs: string[][] = [
    ['raid', 'status', 'p'],
    ['raid', 'scrub', 'p'],
    ['raid', 'fail', 'p', '1'],
    ['raid', 'remove', 'p', '1'],
    ['raid', 'add', 'p', file('x.img'), '--wait'],
    ['raid', 'replace', 'p', file('x.img'), file('y.img'), '--wait'],
    ['raid', 'rebuild', 'p'],
    ['raid', 'scrub', 'p', '--repair'],
    ['raid', 'status', 'p'],
  ];
  const out: string[] = [];
  for (const v of verbs) {
    // y.img, removed from the array, is made anew by replace, as x.img by add.
    if (v[1] === 'add') fs.rmSync(file('y.img'), { force: true });
    const r = strata(home, [...(json ? ['--json'] : []), ...v]);
    if (r.code !== 0) throw new Error(`strata ${v.join(' ')} exited ${r.code}: ${r.stderr}`);
    out.push(`$ ${v.join(' ')}\n${stable(r.stdout)}--\n${stable(said(r.stderr))}`);
  }
  return out;
}

describe('every raid verb prints the same on a served pool as on one nobody serves', () => {
  let srv: ServeProcess | undefined;

  beforeAll(() => {
    buildCli();
    for (const m of ['m0.img', 'y.img']) {
      fs.writeFileSync(file(m), '');
      fs.truncateSync(file(m), 32 << 20);
    }
    ok(home, ['pool', 'create', 'p', '--raid', '1', '--members', `${file('m0.img')},${file('y.img')}`]);
    ok(home, ['volume', 'create', 'p/v', '8M']);
  });
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  it('status, scrub, fail, remove, add, replace and rebuild: human and --json, served or not', async () => {
    const offline = [...round(false), ...round(true)];
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    const online = [...round(false), ...round(true)];
    expect(online).toEqual(offline);
    // The verbs did run: the server's array ends whole, on the member replace put in.
    const st = JSON.parse(ok(home, ['--json', 'raid', 'status', 'p'])) as { state: string; members: { device: string }[] };
    expect(st.state).toBe('optimal');
    expect(st.members.map((m) => m.device)).toEqual([file('m0.img'), file('y.img')]);
  }, 120_000);

  it('the old way of naming the pool, --pool, still works', () => {
    const r = strata(home, ['raid', 'status', '--pool', 'p']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/state optimal/);
    // One word short: a command line error, as commander's own are.
    expect(strata(home, ['raid', 'fail', 'p']).code).toBe(2);
  });
});
