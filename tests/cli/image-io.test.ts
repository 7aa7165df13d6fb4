import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectFormat, formatName, HEAD_BYTES, TAIL_BYTES } from '../../src/image/detect.js';
import { sparseImage } from './image.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, repo } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-image-io');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
const file = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);
async function poolHome(): Promise<string> {
  const home = path.join(scratch.dir, `home${n++}`);
  await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
  return home;
}
const cli = path.join(repo, 'dist/bin/strata.js');

/** `strata` with stdin from `input` (a pipe), stdout captured as bytes. */
function piped(home: string, args: string[], input?: Buffer): { code: number; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [cli, '--home', home, ...args], { input, maxBuffer: 256 << 20 });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

function qemuImgCreate(format: string, target: string, options: string[] = []): void {
  const r = spawnSync('qemu-img', ['create', '-q', '-f', format, ...options, target, '8M'], { encoding: 'utf8' });
  if (r.error) throw new Error(`qemu-img is needed for this test (scripts/test-deps.sh installs it): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`qemu-img create -f ${format}: ${r.stderr}`);
}

describe('import refuses images it cannot read', () => {
  const formats: [string, string[], string][] = [
    ['qcow2', [], 'qcow2'],
    ['qcow', [], 'qcow \\(version 1\\)'],
    ['vmdk', [], 'VMDK'],
    ['vpc', [], 'VHD \\(qemu-img -f vpc\\)'],
    ['vpc', ['-o', 'subformat=fixed'], 'VHD \\(qemu-img -f vpc\\)'],
    ['vhdx', [], 'VHDX'],
    ['vdi', [], 'VDI'],
    ['qed', [], 'QED'],
  ];

  it.each(formats)('detects %s %j by its magic', (format, options, name) => {
    const img = file(`disk.${format}`);
    qemuImgCreate(format, img, options);
    const data = fs.readFileSync(img);
    expect(formatName(detectFormat(data.subarray(0, HEAD_BYTES), data.subarray(data.length - TAIL_BYTES))!)).toMatch(new RegExp(`^${name}$`));
  });

  it('refuses the ones it has no reader for by name on import and creates nothing', async () => {
    const home = await poolHome();
    for (const [format, options, name] of [formats[1]!, formats[6]!, formats[7]!]) {
      const img = file(`refused.${format}`);
      qemuImgCreate(format, img, options);
      const line = await inProcessFails(home, ['import', 'p0/v', img]);
      expect(line).toMatch(new RegExp(`^${img.replace(/[.]/g, '\\.')} is a ${name} image, which Strata cannot read \\(convert it first: qemu-img convert -O raw `));
    }
    expect(await inProcessJson(home, ['volume', 'list', 'p0'])).toEqual([]);
  });

  it('refuses them from a pipe too, and takes raw images and empty ones as raw', async () => {
    const home = await poolHome();
    const img = file('disk.qed');
    qemuImgCreate('qed', img);
    const r = piped(home, ['import', 'p0/v', '-', '--size', '8M'], fs.readFileSync(img));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^strata: stdin is a QED image, which Strata cannot read .*qemu-img convert -O raw IMAGE OUT\.raw\)\n$/);
    expect(detectFormat(Buffer.alloc(4096))).toBeNull();
    expect(detectFormat(Buffer.alloc(0))).toBeNull();
    expect(detectFormat(Buffer.from('QFI'))).toBeNull();
  });
});

describe('import from a pipe, export to stdout', () => {
  it('round-trips through pipes byte for byte', async () => {
    const home = await poolHome();
    const size = (6 << 20) + 12345;
    const img = file('image.raw');
    sparseImage(img, size, 7, 1 << 20);
    const data = fs.readFileSync(img);
    // Inputs the refusals read whole, so the writer never meets a closed pipe.
    const none = piped(home, ['import', 'p0/v', '-'], data.subarray(0, 1 << 20));
    expect(none.code).toBe(1);
    expect(none.stderr).toBe('strata: stdin is a pipe, whose size is not known: give --size to create p0/v\n');
    const r = piped(home, ['--json', 'import', 'p0/v', '-', '--size', '8M'], data);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout.toString())).toMatchObject({ file: 'stdin', fileSize: size, created: true, volumeSize: 8 << 20 });
    const out = piped(home, ['export', 'p0/v', '-']);
    expect(out.code).toBe(0);
    expect(out.stdout.length).toBe(8 << 20);
    expect(out.stdout.subarray(0, size).equals(data)).toBe(true);
    expect(out.stdout.subarray(size).every((b) => b === 0)).toBe(true);
    expect(out.stderr).toMatch(/^exported p0\/v to stdout: 8M, \S+ of data\n$/);
    // /dev/stdin names the same pipe; here a shell's pipe (a FIFO, where the one above is a socket pair).
    const again = spawnSync('sh', ['-c', `cat "$1" | "$2" "$3" --home "$4" import p0/w /dev/stdin --size 8M`, 'sh', img, process.execPath, cli, home], { encoding: 'utf8' });
    expect(again.stderr).toBe('');
    expect(again.stdout).toMatch(/^imported \/dev\/stdin into p0\/w \(created, 8M\)/);
    expect(piped(home, ['export', 'p0/w', '-']).stdout.equals(out.stdout)).toBe(true);
    // More than the volume holds fails, and the volume it created is gone.
    const big = piped(home, ['import', 'p0/small', '-', '--size', '4M'], data.subarray(0, 5 << 20));
    expect(big.stderr).toBe('strata: stdin holds more than p0/small (4M)\n');
    expect((await inProcessJson<{ name: string }[]>(home, ['volume', 'list', 'p0'])).map((v) => v.name)).toEqual(['v', 'w']);
  });

  it('imports over a volume that holds data only with --force; an empty one needs none', async () => {
    const home = await poolHome();
    const img = file('ones.raw');
    fs.writeFileSync(img, Buffer.alloc(1 << 20, 1));
    await inProcess(home, ['volume', 'create', 'p0/v', '2M']);
    await inProcess(home, ['import', 'p0/v', img]);
    expect(await inProcessFails(home, ['import', 'p0/v', img])).toBe('volume p0/v holds data; use --force to overwrite it');
    expect(await inProcess(home, ['import', 'p0/v', img, '--force'])).toMatch(/^imported .* into p0\/v: 1M read, 1M written/);
  });
});
