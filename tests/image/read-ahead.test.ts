import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fileSource, streamSource, type ByteSource } from '../../src/image/byte-source.js';
import { readAhead } from '../../src/image/read-ahead.js';

/** A file source that counts its read calls. */
function counted(file: string): { source: ByteSource; calls: () => number } {
  const inner = fileSource(file);
  let calls = 0;
  return {
    source: { ...inner, read: (offset, length) => (calls++, inner.read(offset, length)), close: () => inner.close() },
    calls: () => calls,
  };
}

describe('read-ahead', () => {
  it('answers any reads, in any order, as the bytes at those offsets (short only at the end of the file)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-readahead-'));
    try {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 3000 }), fc.integer({ min: 1, max: 600 }), fc.array(fc.tuple(fc.nat(3200), fc.nat(900)), { maxLength: 20 }), async (bytes, span, reads) => {
          const data = Buffer.from(bytes);
          const file = path.join(dir, 'f');
          fs.writeFileSync(file, data);
          const src = readAhead(fileSource(file), span);
          try {
            for (const [offset, length] of reads) {
              const want = data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length));
              expect(Buffer.compare(await src.read(offset, length), want)).toBe(0);
            }
          } finally {
            await src.close();
          }
        }),
        { numRuns: 150 },
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads small pieces front to back in one call per window, and a stream as it is', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-readahead-'));
    try {
      const file = path.join(dir, 'f');
      fs.writeFileSync(file, Buffer.alloc(10_000, 7));
      const c = counted(file);
      const src = readAhead(c.source, 1000);
      for (let at = 0; at < 10_000; at += 100) await src.read(at, 100);
      expect(c.calls()).toBe(10);
      await src.close();
      const stream = streamSource(Readable.from([Buffer.alloc(10)]), 's');
      expect(readAhead(stream, 1000)).toBe(stream);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
