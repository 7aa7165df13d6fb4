import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { hasTool, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails } from './in-process.js';
import { buildCli, fails } from './strata.js';

interface ServeDocument {
  listen: Array<{ host?: string; port?: number; socket?: string }>;
  exports: Array<{ name: string; uris: string[] }>;
  metrics?: string;
  qemu: string;
}

/** `strata serve --json`, resolved with its document once the whole of it is on stdout. */
function serveJson(args: string[]): Promise<{ child: ChildProcess; doc: ServeDocument; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [STRATA, '--json', 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      try {
        const doc = JSON.parse(out) as ServeDocument;
        resolve({ child, doc, stop: async () => void (child.exitCode === null && child.kill('SIGTERM'), await exited) });
      } catch {
        // Not all of it yet, unless what came is the human output (the QEMU line comes last).
        if (/^qemu-system/m.test(out)) reject(new Error(`strata serve printed lines, not a JSON document: ${out}`));
      }
    });
    void exited.then(() => reject(new Error(`strata serve exited before printing its document: ${out}${err}`)));
  });
}

/** An image with data, a zero run and data again: 3M + 2M + 1M. */
function image(file: string): Buffer {
  const data = Buffer.concat([Buffer.alloc(3 << 20, 0x33), Buffer.alloc(2 << 20), Buffer.alloc(1 << 20, 0x44)]);
  for (let i = 0; i < data.length; i += 4096) if (data[i] !== 0) data.writeUInt32LE(i, i);
  fs.writeFileSync(file, data);
  return data;
}

describe('import and export on a served pool', () => {
  const { dir, cleanup } = scratchDir('served-transfer');
  const home = path.join(dir, 'h');
  const img = path.join(dir, 'img.raw');
  let expected: Buffer;
  let srv: ServeProcess | undefined;
  const port = (): number => Number(new URL(srv!.uri).port);
  const uri = (name: string): string => `nbd://127.0.0.1:${port()}/${name}`;

  beforeAll(async () => {
    buildCli();
    expected = image(img);
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p/base', '64M']);
    fs.writeFileSync(path.join(dir, 'base.raw'), Buffer.alloc(8 << 20, 0x5a));
    await inProcess(home, ['import', '--force', 'p/base', path.join(dir, 'base.raw')]);
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
  }, 120_000);
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  it('serve --json prints one document with the bound ports, and nbdinfo reaches the export at its URI', async () => {
    expect(hasTool('nbdinfo')).toBe(true);
    const mem = await serveJson(['--memory', '16M', '--export', 'scratch', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0']);
    try {
      const doc = mem.doc;
      expect(doc.listen).toHaveLength(1);
      const bound = doc.listen[0]!.port!;
      expect(bound).toBeGreaterThan(0);
      expect(doc.exports).toEqual([{ name: 'scratch', description: 'memory disk of 16M', uris: [`nbd://127.0.0.1:${bound}/scratch`] }]);
      expect(doc.qemu).toBe(`qemu-system-x86_64 -drive file=nbd://127.0.0.1:${bound}/scratch,format=raw,if=virtio`);
      expect(doc.metrics).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*\/metrics$/);
      expect((await tool('nbdinfo', ['--size', doc.exports[0]!.uris[0]!])).trim()).toBe(String(16 << 20));
    } finally {
      await mem.stop();
    }
  }, 60_000);

  it('imports into a new volume while another is read by qemu-io; nbdcopy reads back the image', async () => {
    expect(hasTool('qemu-io') && hasTool('nbdcopy')).toBe(true);
    const reads = Array.from({ length: 40 }, () => ['-c', 'read -P 0x5a 0 8M']).flat();
    const reader = tool('qemu-io', ['-f', 'raw', uri('base'), ...reads], 120_000);
    expect(await inProcess(home, ['import', 'p/new', img])).toBe(`imported ${img} into p/new (created, 6M): 6M read, 4M written, 2M of zeroes not written\n`);
    // Every read of the other volume saw its pattern (qemu-io -P fails otherwise).
    expect(await reader).not.toMatch(/fail|error/i);
    const back = path.join(dir, 'back.raw');
    await tool('nbdcopy', [uri('new'), back]);
    expect(fs.readFileSync(back).equals(expected)).toBe(true);
    // The zero run was not written: the volume's map has it as a hole.
    expect(await inProcess(home, ['--json', 'volume', 'info', 'p/new'])).toMatch(/"allocatedBytes": 4194304/);
  }, 120_000);

  it('refuses an import into a volume a client is connected to, naming the count', async () => {
    await inProcess(home, ['volume', 'create', 'p/busy', '16M']);
    const client = await NbdClient.connect({ port: port(), export: 'busy' });
    try {
      expect(await inProcessFails(home, ['import', '--force', 'p/busy', img])).toBe('volume p/busy has 1 connected client: an import into a served volume needs it unused (disconnect it, or import into a new volume)');
    } finally {
      await client.disconnect();
    }
    // Once it is gone, the import goes in (the volume reads zeroes: no --force needed).
    expect(await inProcess(home, ['import', 'p/busy', img])).toBe(`imported ${img} into p/busy: 6M read, 4M written, 2M of zeroes not written\n`);
    expect(await inProcessFails(home, ['import', 'p/busy', img])).toBe('volume p/busy holds data; use --force to overwrite it');
  }, 60_000);

  it('exports a served volume sparse; qemu-img compare finds it equal', async () => {
    expect(hasTool('qemu-img')).toBe(true);
    const out = path.join(dir, 'out.raw');
    expect(await inProcess(home, ['export', 'p/base', out])).toBe(`exported p/base to ${out}: 64M, 8M written, 56M left sparse\n`);
    // The 8M image against the 64M export: past its end the export must read zeroes.
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'base.raw'), out]);
    // Block status kept what the volume does not hold a hole in the file.
    expect(fs.statSync(out).blocks * 512).toBeLessThanOrEqual(9 << 20);
    const json = JSON.parse(await inProcess(home, ['--json', 'export', '--force', 'p/base', out])) as Record<string, unknown>;
    expect(json).toEqual({ pool: 'p', volume: 'base', file: out, size: 64 << 20, bytesWritten: 8 << 20, format: 'raw', subformat: null, fileSize: 64 << 20 });
  }, 60_000);

  it('resizes by +SIZE and -SIZE while served; a shrink over data needs --force', async () => {
    expect(await inProcess(home, ['volume', 'resize', 'p/base', '+2M'])).toBe('resized p/base: 64M -> 66M\n');
    expect(await inProcess(home, ['volume', 'resize', 'p/base', '-1M'])).toBe('resized p/base: 66M -> 65M\n');
    expect(await inProcessFails(home, ['volume', 'resize', 'p/base', '-58M'])).toBe('cannot shrink p/base from 65M to 7M: 1M of data lies beyond 7M (a forced shrink discards it)');
    expect(await inProcess(home, ['volume', 'resize', 'p/base', '-58M', '--force'])).toBe('resized p/base: 65M -> 7M\n');
    expect(await inProcessFails(home, ['volume', 'resize', 'p/base', '--bogus'])).toBe("unknown option '--bogus'");
  });
});

describe('volume resize -SIZE on a pool nobody serves', () => {
  const { dir, cleanup } = scratchDir('resize-by');
  const home = path.join(dir, 'h');
  beforeAll(() => buildCli(), 120_000);
  afterAll(() => cleanup());

  it('grows and shrinks by an amount', async () => {
    await inProcess(home, ['pool', 'create', 'p', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p/v', '16M']);
    expect(await inProcess(home, ['volume', 'resize', 'p/v', '-4M'])).toBe('resized p/v: 16M -> 12M\n');
    expect(await inProcess(home, ['--json', 'volume', 'resize', 'p/v', '+4M'])).toMatch(/"size": 16777216/);
    expect(await inProcessFails(home, ['volume', 'resize', 'p/v', '-16M'])).toBe('a volume needs a size above 0');
  });
});

describe('import and export on a pool served with TLS required', () => {
  const { dir, cleanup } = scratchDir('served-tls');
  const home = path.join(dir, 'h');
  let srv: ServeProcess | undefined;
  beforeAll(() => buildCli(), 120_000);
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  it('refuses in one line naming what it needs', async () => {
    await inProcess(home, ['pool', 'create', 'p', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p/a', '8M']);
    const psk = path.join(dir, 'keys.psk');
    fs.writeFileSync(psk, `alice:${'ab'.repeat(32)}\n`);
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-psk', psk]);
    const needs = "pool 'p' is served with TLS required on every listener: import and export of a served volume need one that takes plain connections (serve --tls on), or the server stopped";
    // The process itself: exit 1 and one line on stderr.
    expect(fails(home, ['export', 'p/a', path.join(dir, 'a.raw')])).toBe(`strata: ${needs}`);
    expect(await inProcessFails(home, ['import', '--force', 'p/a', psk])).toBe(needs);
  }, 60_000);
});
