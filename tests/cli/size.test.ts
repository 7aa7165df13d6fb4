import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatSize, MAX_SIZE, parseSize } from '../../bin/size.js';
import { propertyRuns } from '../support/scratch.js';

describe('sizes', () => {
  it('reads K, M, G, T and P as powers of 1024, with or without B/iB and spaces', () => {
    expect(parseSize('512')).toBe(512);
    expect(parseSize('4K')).toBe(4096);
    expect(parseSize('64m')).toBe(64 << 20);
    expect(parseSize('20G')).toBe(20 * 1024 ** 3);
    expect(parseSize('1T')).toBe(1024 ** 4);
    expect(parseSize('2P')).toBe(2 * 1024 ** 5);
    expect(parseSize('1.5G')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('10 GiB')).toBe(10 * 1024 ** 3);
    expect(parseSize('8kb')).toBe(8192);
  });

  it('refuses what is not a whole number of bytes, naming the text', () => {
    for (const bad of ['', 'abc', '-1', '1X', '1e3', '0.3K', '1.5', '1 2K']) {
      expect(() => parseSize(bad)).toThrowError(`invalid size '${bad}'`);
    }
  });

  it('refuses sizes past what a byte count holds exactly by naming the limit, not as fractions', () => {
    for (const big of ['8P', '100P', '99999999999P', '9007199254740992']) {
      expect(() => parseSize(big)).toThrowError(`size '${big}' is too large: sizes go up to 9007199254740991 bytes (8P less one byte)`);
    }
    expect(parseSize('9007199254740991')).toBe(MAX_SIZE);
    expect(parseSize('7P')).toBe(7 * 1024 ** 5);
  });

  it('prints exact sizes in their largest whole unit', () => {
    expect(formatSize(0)).toBe('0');
    expect(formatSize(512)).toBe('512');
    expect(formatSize(1023)).toBe('1023');
    expect(formatSize(4096)).toBe('4K');
    expect(formatSize(100 * 1024 ** 3)).toBe('100G');
    expect(formatSize(1536)).toBe('1.5K');
    expect(formatSize(1024 ** 2 - 1)).toBe('1M');
    expect(formatSize(12.34 * 1024 ** 2)).toBe('12.3M');
  });

  it('reads back every size it prints exactly (whole units)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 0, max: 5 }), (k, exp) => {
        const n = k * 1024 ** exp;
        fc.pre(Number.isSafeInteger(n));
        expect(parseSize(formatSize(n))).toBe(n);
      }),
      { numRuns: propertyRuns(400) },
    );
  });

  it('prints any size within 0.5% of its value', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (n) => {
        const m = /^([\d.]+)([KMGTP]?)$/.exec(formatSize(n));
        expect(m).not.toBeNull();
        const back = Number(m![1]) * 1024 ** ['', 'K', 'M', 'G', 'T', 'P'].indexOf(m![2]!);
        expect(Math.abs(back - n) / n).toBeLessThan(0.005);
      }),
      { numRuns: propertyRuns(400) },
    );
  });
});
