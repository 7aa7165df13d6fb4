import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiskFormat } from '../../src/image/image-reader.js';
import { hasTool, startServe, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { buildCli, fails, json, ok, repo, strata } from './strata.js';

const have = hasTool('qemu-img') && hasTool('qemu-io');
const scratch = scratchDir('cli-image-formats');
afterAll(() => scratch.cleanup());
const at = (name: string): string => path.join(scratch.dir, name);
const cli = path.join(repo, 'dist/bin/strata.js');

function run(cmd: string, args: string[], input?: Buffer): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const qemuImg = (...args: string[]): string => run('qemu-img', args);
const qemuIo = (img: string, format: string, ...cmds: string[]): string => run('qemu-io', ['-f', format, ...cmds.flatMap((c) => ['-c', c]), img]);

/** qemu-img's name of a format (VHD is vpc there). */
const qemuName = (f: DiskFormat): string => (f === 'vhd' ? 'vpc' : f);

/** Asserts with qemu-img that two images read the same (formats given, so a fixed VHD is not probed as raw). */
function sameContent(a: string, fa: DiskFormat, b: string, fb: DiskFormat): void {
  expect(qemuImg('compare', '-f', qemuName(fa), '-F', qemuName(fb), a, b)).toMatch(/Images are identical/);
}

/** `strata` with stdin from `input`. */
function piped(home: string, args: string[], input: Buffer): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, '--home', home, ...args], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const SIZE = '8M';
let n = 0;
function poolHome(): string {
  const home = at(`home${n++}`);
  ok(home, ['pool', 'create', 'p', '--size', '512M']);
  return home;
}

/** A raw disk with data, holes and written zeroes, the source of every converted image. */
function sourceRaw(): string {
  const file = at('source.raw');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 8 << 20);
  qemuIo(file, 'raw', 'write -P 0x11 0 1M', 'write -P 0x22 2M 512k', 'write -z 2304k 64k', 'write -P 0x33 5M 1536k', 'write -P 0x44 8128k 64k');
  return file;
}

/** The images qemu-img makes, one per format and subformat the readers take. */
function sampleImages(raw: string): Array<{ name: string; file: string; format: DiskFormat }> {
  const out: Array<{ name: string; file: string; format: DiskFormat }> = [];
  const add = (name: string, format: DiskFormat, args: string[]): void => {
    const file = at(`sample-${name}`);
    qemuImg('convert', '-f', 'raw', '-O', qemuName(format), ...args, raw, file);
    out.push({ name, file, format });
  };
  // Compressed clusters, then qemu-io's own writes over them: plain data, and zero clusters over compressed data.
  add('compressed.qcow2', 'qcow2', ['-c', '-o', 'cluster_size=65536']);
  if (out.length > 0) qemuIo(out[0]!.file, 'qcow2', 'write -P 0x55 256k 128k', 'write -z 512k 128k', 'write -z 6M 64k');
  add('sparse.vmdk', 'vmdk', ['-o', 'subformat=monolithicSparse']);
  add('stream.vmdk', 'vmdk', ['-o', 'subformat=streamOptimized']);
  add('dynamic.vhd', 'vhd', ['-o', 'subformat=dynamic']);
  add('fixed.vhd', 'vhd', ['-o', 'subformat=fixed']);
  add('disk.vhdx', 'vhdx', []);
  return out;
}

/** The writers and their subformats, as `strata export` takes them. */
const exportsToCheck: Array<{ ext: string; format: DiskFormat; sub?: string; check: boolean }> = [
  { ext: 'qcow2', format: 'qcow2', check: true },
  { ext: 'vmdk', format: 'vmdk', sub: 'monolithicSparse', check: true },
  { ext: 'vmdk', format: 'vmdk', sub: 'streamOptimized', check: true },
  { ext: 'vhd', format: 'vhd', sub: 'dynamic', check: false },
  { ext: 'vhd', format: 'vhd', sub: 'fixed', check: false },
  { ext: 'vhdx', format: 'vhdx', check: true },
];

describe.skipIf(!have)('import and export of qcow2, VMDK, VHD and VHDX images', () => {
  let home = '';
  let raw = '';
  beforeAll(() => {
    buildCli();
    home = poolHome();
    raw = sourceRaw();
  }, 120_000);

  it('imports what qemu-img made in every format read, found by its magic, exactly; exports it back as raw', () => {
    const samples = sampleImages(raw);
    for (const [i, s] of samples.entries()) {
      const r = json<{ format: string; virtualSize: number; created: boolean; backing: string[] }>(home, ['import', `p/s${i}`, s.file]);
      // qemu rounds a VHD up to its CHS geometry: the virtual size is what qemu-img says it is.
      const virtual = (JSON.parse(qemuImg('info', '--output=json', '-f', qemuName(s.format), s.file)) as { 'virtual-size': number })['virtual-size'];
      expect(r).toMatchObject({ format: s.format, virtualSize: virtual, created: true, backing: [] });
      const out = at(`back-${s.name}.raw`);
      ok(home, ['export', `p/s${i}`, out]);
      sameContent(s.file, s.format, out, 'raw');
    }
  });

  it('exports in every format written, with --subformat; qemu-img check passes and compare finds the original', () => {
    const img = at('exported-source.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, img);
    ok(home, ['import', 'p/e', img]);
    for (const e of exportsToCheck) {
      const out = at(`export-${e.sub ?? 'plain'}.${e.ext}`);
      const r = json<{ format: string; subformat: string | null; size: number; fileSize: number }>(home, ['export', 'p/e', out, ...(e.sub ? ['--subformat', e.sub] : [])]);
      expect(r).toMatchObject({ format: e.format, size: 8 << 20, fileSize: fs.statSync(out).size });
      if (e.sub) expect(r.subformat).toBe(e.sub);
      if (e.check) expect(qemuImg('check', '-f', qemuName(e.format), out)).toMatch(/No errors were found/);
      sameContent(raw, 'raw', out, e.format);
    }
    // A progress bar on a terminal (`script` gives one), in bytes of the image read and of the volume written.
    const env: NodeJS.ProcessEnv = { ...process.env, STRATA_PROGRESS_DELAY: '0' };
    delete env.STRATA_HOME;
    const tty = (args: string): string => spawnSync('script', ['-qec', `${process.execPath} ${cli} --home ${home} ${args}`, '/dev/null'], { encoding: 'utf8', env }).stdout;
    expect(tty(`import p/tty ${img}`)).toMatch(/\rimport p\/tty \[#*\.*\]\s+\d+% [\d.]+[KMG]?\/s\x1b\[K[^]*\r\x1b\[Kimported .* into p\/tty/);
    expect(tty(`export p/tty ${at('tty.vhd')}`)).toMatch(/\rexport p\/tty \[#*\.*\]\s+\d+% [\d.]+[KMG]?\/s\x1b\[K[^]*\r\x1b\[Kexported p\/tty to .*tty\.vhd \(vhd dynamic/);
    // --format wins over the extension; a raw export through it is the plain raw path.
    ok(home, ['export', 'p/e', at('named.img'), '--format', 'qcow2']);
    sameContent(raw, 'raw', at('named.img'), 'qcow2');
  });

  it('refuses in one line what it cannot do, and leaves nothing behind', () => {
    const good = at('refusals.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, good);
    // A truncated image: its data clusters lie past the end.
    const cut = at('cut.qcow2');
    fs.writeFileSync(cut, fs.readFileSync(good).subarray(0, 1 << 20));
    expect(fails(home, ['import', 'p/cut', cut])).toMatch(/^strata: .*cut\.qcow2/);
    // A damaged header: the L1 table far past the end of the file.
    const bad = at('bad-l1.qcow2');
    const bytes = fs.readFileSync(good);
    bytes.writeBigUInt64BE(1n << 40n, 40);
    fs.writeFileSync(bad, bytes);
    expect(fails(home, ['import', 'p/bad', bad])).toMatch(/^strata: .*bad-l1\.qcow2/);
    // A backing file that is not there, named.
    const orphan = at('orphan.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'gone.qcow2', '-F', 'qcow2', '-u', orphan, SIZE);
    expect(fails(home, ['import', 'p/orphan', orphan])).toMatch(/its backing file gone\.qcow2 is missing/);
    // A pipe: the format must be given; a backing file cannot be found from one.
    const image = fs.readFileSync(good);
    const unnamed = piped(home, ['import', 'p/pipe', '-'], image);
    expect(unnamed.code).toBe(1);
    expect(unnamed.stderr).toBe('strata: stdin is a qcow2 image: give --format qcow2 to import it from a pipe\n');
    const fromPipe = piped(home, ['import', 'p/orphan', '-', '--format', 'qcow2'], fs.readFileSync(orphan));
    expect(fromPipe.code).toBe(1);
    expect(fromPipe.stderr).toMatch(/^strata: stdin has a backing file \(gone\.qcow2\), which an image read from a stream cannot have/);
    const usage = strata(home, ['import', 'p/x', good, '--format', 'qed']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/option '--format <format>' argument 'qed' is invalid/);
    expect(fails(home, ['export', 'p/none', at('x.qcow2'), '--salvage'])).toBe('strata: --salvage writes raw images only (not qcow2)');
    expect(fails(home, ['export', 'p/none', at('x.qcow2'), '--subformat', 'fixed'])).toBe('strata: --subformat fixed: qcow2 images have no subformats');
    const names = json<Array<{ name: string }>>(home, ['volume', 'list', 'p']).map((v) => v.name);
    expect(names.filter((v) => ['cut', 'bad', 'orphan', 'pipe', 'x'].includes(v))).toEqual([]);
    expect(fs.existsSync(at('x.qcow2'))).toBe(false);
    // Over a volume that holds data (--force): what the image leaves unallocated reads zeroes too.
    ok(home, ['volume', 'create', 'p/full', SIZE]);
    fs.writeFileSync(at('ones.raw'), Buffer.alloc(8 << 20, 0xff));
    ok(home, ['import', 'p/full', at('ones.raw'), '--force']);
    expect(fails(home, ['import', 'p/full', good])).toBe('strata: volume p/full holds data; use --force to overwrite it');
    expect(json(home, ['import', 'p/full', good, '--force'])).toMatchObject({ created: false, format: 'qcow2' });
    ok(home, ['export', 'p/full', at('full.raw')]);
    sameContent(raw, 'raw', at('full.raw'), 'raw');
    // A qcow2 with no backing streams from a pipe when its format is given.
    const streamed = piped(home, ['--json', 'import', 'p/pipe', '-', '--format', 'qcow2'], image);
    expect(streamed.stderr).toBe('');
    expect(JSON.parse(streamed.stdout)).toMatchObject({ file: 'stdin', format: 'qcow2', created: true });
    ok(home, ['export', 'p/pipe', at('pipe.raw')]);
    sameContent(raw, 'raw', at('pipe.raw'), 'raw');
  });
});

/**
 * base.qcow2 <- mid.qcow2 <- top.qcow2, each overlay with data and zero
 * clusters over the data below, as qemu makes them.
 */
function chain(dir: string): { base: string; mid: string; top: string } {
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, 'base.qcow2');
  const mid = path.join(dir, 'mid.qcow2');
  const top = path.join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, SIZE);
  qemuIo(base, 'qcow2', 'write -P 0x61 0 3M', 'write -P 0x62 5M 2M');
  // Relative backing names, resolved against the overlay's directory wherever the import runs.
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid);
  qemuIo(mid, 'qcow2', 'write -z 1M 512k', 'write -P 0x63 2560k 1M', 'write -z 5M 64k');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top);
  qemuIo(top, 'qcow2', 'write -P 0x64 0 64k', 'write -z 2560k 256k', 'write -z 6M 1M');
  return { base, mid, top };
}

interface TreeNode {
  name: string;
  children?: TreeNode[];
}

function treeNames(node: TreeNode): string[] {
  return [node.name, ...(node.children ?? []).flatMap(treeNames)];
}

/** Imports the chain as snapshots (and flattened); each layer read back through a clone equals its image. */
function chainChecks(home: string, c: { base: string; mid: string; top: string }, tag: string, flatten: boolean): void {
  const r = json<{ snapshots: string[]; backing: string[]; flattened: boolean }>(home, ['import', `p/${tag}`, c.top]);
  expect(r).toMatchObject({ snapshots: ['base', 'mid'], backing: [c.base, c.mid], flattened: false });
  const list = json<{ tree: TreeNode }>(home, ['snapshot', 'list', `p/${tag}`]);
  expect(treeNames(list.tree).filter((x) => x.includes('@'))).toEqual([`${tag}@base`, `${tag}@mid`]);
  for (const [snap, file] of [['base', c.base], ['mid', c.mid]] as const) {
    ok(home, ['clone', `p/${tag}@${snap}`, `p/${tag}-${snap}`]);
    const out = at(`${tag}-${snap}.raw`);
    ok(home, ['export', `p/${tag}-${snap}`, out]);
    sameContent(file, 'qcow2', out, 'raw');
  }
  const head = at(`${tag}-head.qcow2`);
  ok(home, ['export', `p/${tag}`, head]);
  sameContent(c.top, 'qcow2', head, 'qcow2');
  if (!flatten) return;
  const flat = json<{ snapshots: string[]; flattened: boolean }>(home, ['import', `p/${tag}-flat`, c.top, '--flatten']);
  expect(flat).toMatchObject({ snapshots: [], flattened: true });
  expect(treeNames(json<{ tree: TreeNode }>(home, ['snapshot', 'list', `p/${tag}-flat`]).tree)).toEqual([`${tag}-flat`]);
  const flatOut = at(`${tag}-flat.raw`);
  ok(home, ['export', `p/${tag}-flat`, flatOut]);
  sameContent(c.top, 'qcow2', flatOut, 'raw');
  // Snapshots need a new volume: an existing one takes the chain only flattened.
  expect(fails(home, ['import', `p/${tag}-flat`, c.top, '--force'])).toMatch(/has backing files, whose snapshots only a new volume can take/);
}

describe.skipIf(!have)('a qcow2 backing chain', () => {
  let c: { base: string; mid: string; top: string };
  beforeAll(() => {
    buildCli();
    c = chain(at('chain'));
  }, 120_000);

  it('comes in as snapshots under the volume, base first, or flattened with --flatten', () => {
    chainChecks(poolHome(), c, 'v', true);
  });

  describe('on a served pool', () => {
    let home = '';
    let srv: ServeProcess | undefined;
    beforeAll(async () => {
      home = poolHome();
      ok(home, ['volume', 'create', 'p/other', '1M']);
      srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    }, 120_000);
    afterAll(async () => {
      await srv?.stop();
    });

    it('as snapshots too, taken by the server, the data written over its exports', () => {
      chainChecks(home, c, 's', false);
      // A failed import removes the volume it made, snapshots and all: here the top is cut short.
      const cut = at('chain/cut-top.qcow2');
      const top = fs.readFileSync(c.top);
      fs.writeFileSync(cut, top.subarray(0, top.length - 32768));
      expect(fails(home, ['import', 'p/cut', cut])).toMatch(/^strata: .*cut-top\.qcow2/);
      expect(json<Array<{ name: string }>>(home, ['volume', 'list', 'p']).map((v) => v.name)).not.toContain('cut');
    });

    it('refuses an image that is not of the --format given, and exits (the control socket does not hold it open)', () => {
      // spawnSync would otherwise wait forever on a process that never ends: the timeout turns that into a failure.
      const r = spawnSync(process.execPath, [path.join(repo, 'dist/bin/strata.js'), '--home', home, 'import', 'p/wrong', c.top, '--format', 'vmdk'], { encoding: 'utf8', timeout: 60_000 });
      expect(r.signal).toBeNull();
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^strata: .*top\.qcow2: .*not a VMDK.* \(the file is a qcow2 image: leave --format out, or give --format qcow2\)$/)]);
      expect(json<Array<{ name: string }>>(home, ['volume', 'list', 'p']).map((v) => v.name)).not.toContain('wrong');
      // What a native import did not write it says as a raw import does.
      expect(ok(home, ['import', 'p/said', c.top, '--flatten'])).toMatch(/ of zeroes not written$/m);
    });
  });
});
