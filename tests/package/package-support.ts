import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ByteSource } from '../../src/image/byte-source.js';
import type { ImageReader } from '../../src/image/image-reader.js';
import type { TemplateSettings } from '../../src/package/settings.js';

const run = promisify(execFile);

/** Runs a standard tool in `cwd`; rejects with its stderr. */
export async function sh(cwd: string, cmd: string, args: string[]): Promise<string> {
  try {
    return (await run(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.message}\n${e.stderr ?? ''}`);
  }
}

/** Bytes with data, a zero run and a tail, different per seed (xorshift, so fast). */
export function diskBytes(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let at = 0; at + 4 <= size / 2; at += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, at);
  }
  buf.fill(0x5a, Math.floor((3 * size) / 4));
  return buf;
}

/** A digest to compare big buffers by: vitest's deep equality walks them byte by byte. */
export function sha(buf: Buffer | undefined): string {
  return buf === undefined ? 'none' : crypto.createHash('sha256').update(buf).digest('hex');
}

/** Everything a source holds, read front to back. */
export async function drain(source: ByteSource): Promise<Buffer> {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const b = await source.read(at, 256 * 1024);
    if (b.length === 0) break;
    parts.push(b);
    at += b.length;
  }
  return Buffer.concat(parts);
}

/** A template's settings with one disk per entry of `capacities`. */
export function settingsWith(capacities: number[], extra: Partial<TemplateSettings> = {}): TemplateSettings {
  return {
    name: 'app01',
    description: 'Test appliance',
    os: { ovfId: 94, osType: 'ubuntu64Guest', osinfo: null, description: 'Ubuntu Linux (64-bit)' },
    cpus: 2,
    memoryBytes: 2 * 2 ** 30,
    firmware: 'bios',
    disks: capacities.map((capacity, i) => ({ name: `disk${i + 1}`, capacity, bus: 'virtio', bootOrder: i === 0 ? 1 : null })),
    networks: [{ name: 'default', model: 'virtio' }],
    source: 'strata',
    ...extra,
  };
}

/** `sha256sum --tag` lines for `files` in `dir`, as ovftool and VirtualBox write manifests. */
export async function manifestFor(dir: string, files: string[]): Promise<string> {
  return sh(dir, 'sha256sum', ['--tag', ...files]);
}

/** Writes `files` (name -> content) into `dir`. */
export function writeFiles(dir: string, files: Record<string, string | Buffer>): void {
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), content);
  }
}

/** What an image reader decodes, as the guest would see it. */
export async function decoded(reader: ImageReader): Promise<Buffer> {
  const got = Buffer.alloc(reader.virtualSize);
  await reader.decode({ data: async (offset, buf) => void buf.copy(got, offset), zero: async (offset, length) => void got.fill(0, offset, offset + length) });
  return got;
}
