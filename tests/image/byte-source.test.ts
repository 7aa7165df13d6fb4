import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fileSource, streamSource } from '../../src/image/byte-source.js';
import { NotStreamableError } from '../../src/image/errors.js';

/** A stream that hands `data` out in the given chunk sizes. */
function chunked(data: Buffer, sizes: number[]): Readable {
  const parts: Buffer[] = [];
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = Math.max(1, sizes[i % sizes.length]!);
    parts.push(data.subarray(at, at + n));
    at += n;
  }
  return Readable.from(parts, { objectMode: true });
}

describe('byte sources', () => {
  it('a stream answers increasing reads exactly as the bytes at those offsets, however it is chunked', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 5000 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 8 }), fc.array(fc.tuple(fc.nat(600), fc.nat(900)), { maxLength: 12 }), async (bytes, sizes, steps) => {
        const data = Buffer.from(bytes);
        const src = streamSource(chunked(data, sizes), 'test');
        let pos = 0;
        for (const [gap, length] of steps) {
          const offset = pos + gap;
          const got = await src.read(offset, length);
          expect(got).toEqual(data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length)));
          pos = offset + got.length;
        }
        await src.close();
      }),
      { numRuns: 200 },
    );
  });

  it('a stream refuses to go back, naming both offsets', async () => {
    const src = streamSource(chunked(Buffer.alloc(100, 7), [30]), 'pipe');
    await src.read(50, 10);
    await expect(src.read(10, 5)).rejects.toThrow(NotStreamableError);
    await expect(src.read(10, 5)).rejects.toThrow(/pipe cannot be read front to back: it needs offset 10 after 60/);
  });

  it('a stream that fails reports the failure to every later read', async () => {
    const stream = new Readable({ read() {} });
    stream.push(Buffer.alloc(10));
    const src = streamSource(stream, 'http');
    const pending = src.read(0, 100);
    stream.destroy(new Error('connection reset'));
    await expect(pending).rejects.toThrow(/connection reset/);
    await expect(src.read(200, 1)).rejects.toThrow(/connection reset/);
  });

  it('a file answers reads anywhere, short only past its end', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-src-'));
    const file = path.join(dir, 'f');
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 255));
    fs.writeFileSync(file, data);
    const src = fileSource(file);
    expect(await src.read(900, 50)).toEqual(data.subarray(900, 950));
    expect(await src.read(10, 5)).toEqual(data.subarray(10, 15));
    expect((await src.read(990, 50)).length).toBe(10);
    expect((await src.read(2000, 50)).length).toBe(0);
    await src.close();
    fs.rmSync(dir, { recursive: true });
  });
});
