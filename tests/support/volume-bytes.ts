import { Writable } from 'node:stream';
import type { Pool } from '../../src/qcowlike/index.js';

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

/** Everything an open handle reads; the handle is closed after. */
export async function readAll(h: { size: number; read(buf: Uint8Array, offset: number): Promise<void>; close(): Promise<void> }): Promise<Buffer> {
  try {
    const b = Buffer.alloc(h.size);
    await h.read(b, 0);
    return b;
  } finally {
    await h.close();
  }
}

/** What a volume's head reads, whole. */
export async function volumeBytes(pool: Pool, volume: string): Promise<Buffer> {
  return readAll(await pool.openVolume(volume, { readOnly: true }));
}
