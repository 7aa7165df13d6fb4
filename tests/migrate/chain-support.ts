import type { Pool } from '../../src/qcowlike/index.js';
import { openFrozen } from '../../src/snapshot/index.js';
import { readAll, volumeBytes } from '../support/volume-bytes.js';

export { Collect } from '../support/volume-bytes.js';

/** A volume's head (`vol`), a snapshot (`vol@snap`) or a template (`tmpl`, with template: true), read whole. */
export async function contents(pool: Pool, name: string, template = false): Promise<Buffer> {
  const at = name.indexOf('@');
  if (template) return readAll(await openFrozen(pool, { template: name }));
  if (at < 0) return volumeBytes(pool, name);
  return readAll(await openFrozen(pool, { volume: name.slice(0, at), snapshot: name.slice(at + 1) }));
}

/** Writes `data` at `offset`, flushed. */
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
