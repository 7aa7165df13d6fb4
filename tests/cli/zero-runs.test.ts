import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runsOf } from '../../src/host/image-copy.js';
import { propertyRuns } from '../support/scratch.js';

const PAGE = 4096;

describe('zero-run detection for import and export', () => {
  it('splits a chunk into alternating runs that tile it, zero exactly where whole pages are zero', () => {
    const chunk = fc
      .array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 3 * PAGE }), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 12 })
      .map((parts) => Buffer.concat(parts.map(([zero, n, byte]) => Buffer.alloc(n, zero ? 0 : byte))));
    fc.assert(
      fc.property(chunk, (buf) => {
        const runs = [...runsOf(buf)];
        let pos = 0;
        for (const [i, r] of runs.entries()) {
          expect(r.offset).toBe(pos);
          expect(r.length).toBeGreaterThan(0);
          if (i > 0) expect(r.zero).not.toBe(runs[i - 1]!.zero);
          // Runs break only at page boundaries (the last page may be short).
          if (r.offset + r.length < buf.length) expect((r.offset + r.length) % PAGE).toBe(0);
          // The model: a page is zero when every byte of it is.
          for (let p = r.offset; p < r.offset + r.length; p += PAGE) {
            const page = buf.subarray(p, Math.min(p + PAGE, buf.length));
            expect(page.every((b) => b === 0)).toBe(r.zero);
          }
          pos += r.length;
        }
        expect(pos).toBe(buf.length);
      }),
      { numRuns: propertyRuns(400) },
    );
  });

  it('treats a single nonzero byte as data for its whole page, and nothing else', () => {
    const buf = Buffer.alloc(4 * PAGE);
    buf[2 * PAGE + 17] = 1;
    expect([...runsOf(buf)]).toEqual([
      { offset: 0, length: 2 * PAGE, zero: true },
      { offset: 2 * PAGE, length: PAGE, zero: false },
      { offset: 3 * PAGE, length: PAGE, zero: true },
    ]);
    expect([...runsOf(Buffer.alloc(0))]).toEqual([]);
  });
});
