import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, startServe, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, fails } from './strata.js';

/**
 * `strata export` of a snapshot and of a template: the image holds the
 * frozen bytes, not the volume's since, whether the pool is open here or
 * held by `strata serve` (then read over the server's VOL@SNAP and TMPL
 * exports).
 */
const have = hasTool('qemu-img') && hasTool('qemu-io');

function run(cmd: string, args: string[]): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}
function qemuImg(...args: string[]): string {
  const r = run('qemu-img', args);
  if (r.code !== 0) throw new Error(`qemu-img ${args.join(' ')} exited ${r.code}: ${r.out}`);
  return r.out;
}
/** Whether qemu-img compare finds the two images equal (exit 1 is "different", anything else an error). */
function same(a: string, fa: string, b: string, fb: string): boolean {
  const r = run('qemu-img', ['compare', '-f', fa, '-F', fb, a, b]);
  if (r.code > 1) throw new Error(`qemu-img compare ${a} ${b} exited ${r.code}: ${r.out}`);
  return r.code === 0;
}

/** An 8M raw disk written by qemu-io: data with `pattern`, holes and zeroes, at places that differ per pattern. */
function rawDisk(file: string, pattern: number): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 8 << 20);
  const at = (pattern % 4) << 20;
  const hex = `0x${pattern.toString(16)}`;
  const r = run('qemu-io', ['-f', 'raw', '-c', `write -P ${hex} ${at} 1M`, '-c', `write -z ${at + (1 << 20)} 64k`, '-c', `write -P ${hex} 7M 192k`, file]);
  if (r.code !== 0) throw new Error(`qemu-io exited ${r.code}: ${r.out}`);
}

describe.skipIf(!have)('export of a snapshot or a template', () => {
  const scratch = scratchDir('export-frozen');
  const at = (name: string): string => path.join(scratch.dir, name);
  const home = at('home');
  let srv: ServeProcess | undefined;

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'p', '--size', '256M', '--path', at('p.pool')]);
    // What the snapshot holds came in as a qcow2 that qemu-img made.
    rawDisk(at('a.raw'), 0x11);
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', at('a.raw'), at('a.qcow2'));
    await inProcess(home, ['import', 'p/vm', at('a.qcow2')]);
    await inProcess(home, ['snapshot', 'create', 'p/vm@s1']);
    // Then the template's bytes, then the volume's own since.
    rawDisk(at('b.raw'), 0x22);
    await inProcess(home, ['import', '--force', 'p/vm', at('b.raw')]);
    await inProcess(home, ['template', 'clone', 'p/vm', 'p/tmpl']);
    rawDisk(at('c.raw'), 0x33);
    await inProcess(home, ['import', '--force', 'p/vm', at('c.raw')]);
    // Three different disks, or the comparisons below prove nothing.
    expect(same(at('a.raw'), 'raw', at('c.raw'), 'raw') || same(at('b.raw'), 'raw', at('c.raw'), 'raw')).toBe(false);
  }, 120_000);
  afterAll(async () => {
    await srv?.stop();
    scratch.cleanup();
  });

  /** Exports the snapshot as qcow2 and raw and the template as raw and qcow2, each compared with what it was made from. */
  async function exportsFrozen(tag: string): Promise<void> {
    const snapQcow2 = at(`${tag}-s1.qcow2`);
    const snap = await inProcessJson<Record<string, unknown>>(home, ['export', 'p/vm@s1', snapQcow2]);
    expect(snap).toMatchObject({ pool: 'p', volume: 'vm', snapshot: 's1', file: snapQcow2, format: 'qcow2', size: 8 << 20 });
    expect(qemuImg('check', '-f', 'qcow2', snapQcow2)).toMatch(/No errors were found/);
    expect(same(at('a.qcow2'), 'qcow2', snapQcow2, 'qcow2')).toBe(true);
    const snapRaw = at(`${tag}-s1.raw`);
    expect(await inProcess(home, ['export', 'p/vm@s1', snapRaw])).toMatch(new RegExp(`^exported snapshot p/vm@s1 to ${snapRaw}: 8M, `));
    expect(same(at('a.qcow2'), 'qcow2', snapRaw, 'raw')).toBe(true);

    const tmplRaw = at(`${tag}-tmpl.raw`);
    const tmpl = await inProcessJson<Record<string, unknown>>(home, ['export', 'p/tmpl', tmplRaw]);
    expect(tmpl).toMatchObject({ pool: 'p', template: 'tmpl', file: tmplRaw, format: 'raw', size: 8 << 20 });
    expect(tmpl).not.toHaveProperty('volume');
    expect(same(at('b.raw'), 'raw', tmplRaw, 'raw')).toBe(true);
    const tmplQcow2 = at(`${tag}-tmpl.qcow2`);
    expect(await inProcess(home, ['export', 'p/tmpl', tmplQcow2])).toMatch(/^exported template p\/tmpl to .* \(qcow2, /);
    expect(same(at('b.raw'), 'raw', tmplQcow2, 'qcow2')).toBe(true);

    // The volume itself exports what it holds now.
    const vol = at(`${tag}-vm.raw`);
    expect(await inProcessJson<Record<string, unknown>>(home, ['export', 'p/vm', vol])).not.toHaveProperty('snapshot');
    expect(same(at('c.raw'), 'raw', vol, 'raw')).toBe(true);
  }

  async function refusals(): Promise<void> {
    const out = at('refused.raw');
    expect(await inProcessFails(home, ['export', 'p/nope', out])).toBe("volume, snapshot or template 'nope' not found in pool 'p'");
    expect(await inProcessFails(home, ['export', 'p/vm@nope', out])).toBe("snapshot 'vm@nope' not found in pool 'p'");
    expect(await inProcessFails(home, ['export', 'p/nope@s1', out])).toBe("volume 'nope' not found in pool 'p'");
    expect(await inProcessFails(home, ['export', 'p/tmpl@s1', out])).toBe("'tmpl' in pool 'p' is a template, which has no snapshots (export p/tmpl)");
    expect(fs.existsSync(out)).toBe(false);
  }

  it('exports a snapshot and a template of an unserved pool', async () => {
    await exportsFrozen('local');
    await refusals();
    // As the CLI ends: exit 1, one line.
    expect(fails(home, ['export', 'p/nope', at('x.raw')])).toBe("strata: volume, snapshot or template 'nope' not found in pool 'p'");
    expect(fails(home, ['export', 'p/a/b', at('x.raw')])).toBe("strata: invalid name 'p/a/b' (expected POOL/VOL, POOL/VOL@SNAP or POOL/TEMPLATE, e.g. pool0/vm1)");
  }, 60_000);

  it('exports them from a served pool over its VOL@SNAP and TMPL exports', async () => {
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    await exportsFrozen('served');
    await refusals();
    await srv.stop();
    // A server that exports the volume alone does not serve its snapshot: the export says so rather than opening the pool.
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0', '--export', 'vm']);
    expect(await inProcessFails(home, ['export', 'p/vm@s1', at('narrow.raw')])).toMatch(/^pool 'p' is served, and its server does not export p\/vm@s1 \(serve --export picks what is served/);
    expect(fs.existsSync(at('narrow.raw'))).toBe(false);
  }, 60_000);
});
