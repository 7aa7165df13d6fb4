import { PassThrough, Writable } from 'node:stream';
import type { Pool } from '../../src/qcowlike/index.js';
import { openFrozen } from '../../src/snapshot/index.js';

/** Collects what is written into it. */
export class Collect extends Writable {
  parts: Buffer[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.parts.push(Buffer.from(chunk));
    cb();
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** A volume's head (`vol`), a snapshot (`vol@snap`) or a template (`tmpl`, with template: true), read whole. */
export async function contents(pool: Pool, name: string, template = false): Promise<Buffer> {
  const at = name.indexOf('@');
  const h = template ? await openFrozen(pool, { template: name }) : at < 0 ? await pool.openVolume(name, { readOnly: true }) : await openFrozen(pool, { volume: name.slice(0, at), snapshot: name.slice(at + 1) });
  try {
    const b = Buffer.alloc(h.size);
    await h.read(b, 0);
    return b;
  } finally {
    await h.close();
  }
}

export async function write(pool: Pool, volume: string, offset: number, data: Buffer): Promise<void> {
  const v = await pool.openVolume(volume);
  try {
    await v.write(data, offset);
    await v.flush();
  } finally {
    await v.close();
  }
}

export function fill(length: number, byte: number): Buffer {
  return Buffer.alloc(length, byte);
}

/** The bytes as a source of chunks of `size` (a pipe delivers them in pieces). */
export async function* chunked(b: Buffer, size = 65536): AsyncGenerator<Buffer> {
  for (let at = 0; at < b.length; at += size) yield b.subarray(at, Math.min(b.length, at + size));
}

export function piped(): PassThrough {
  return new PassThrough();
}
