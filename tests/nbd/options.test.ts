import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OptionError, parseGo, parseMetaContext } from '../../src/nbd/options.js';
import { propertyRuns } from '../support/scratch.js';
import { goData, metaData } from './wire.js';

const text = fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0'));

describe('option payloads', () => {
  it('parse back what was encoded', () => {
    fc.assert(
      fc.property(text, fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), text, fc.array(text, { maxLength: 5 }), (name, infos, mname, queries) => {
        expect(parseGo(goData(name, infos))).toEqual({ name, infos });
        expect(parseMetaContext(metaData(mname, queries))).toEqual({ name: mname, queries });
      }),
      { numRuns: propertyRuns(500) },
    );
  });

  it('reject arbitrary bytes only with OptionError (answered NBD_REP_ERR_INVALID), never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        for (const parse of [parseGo, parseMetaContext]) {
          try {
            parse(Buffer.from(bytes));
          } catch (err) {
            expect(err).toBeInstanceOf(OptionError);
          }
        }
      }),
      { numRuns: propertyRuns(3000) },
    );
  });

  it('refuse names with NUL bytes, invalid UTF-8 and lengths past the data', () => {
    expect(() => parseGo(goData('a\0b', []))).toThrow(OptionError);
    const bad = goData('ab', []);
    bad[4] = 0xff;
    expect(() => parseGo(bad)).toThrow(/UTF-8/);
    const long = goData('abc', []);
    long.writeUInt32BE(1000, 0);
    expect(() => parseGo(long)).toThrow(/does not fit/);
  });
});
