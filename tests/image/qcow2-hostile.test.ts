import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { streamSource, type ByteSource } from '../../src/image/byte-source.js';
import { ImageFormatError, NotStreamableError, UnsupportedImageError } from '../../src/image/errors.js';
import { writeQcow2 } from '../../src/image/qcow2/writer.js';
import { propertyRuns } from '../support/scratch.js';
import { openQcow2 } from '../../src/image/qcow2/reader.js';
import { bufferContent } from './support/content.js';
import { decodeSource } from './support/decode.js';
import { seeded } from './support/random.js';
import { memoryByteSink } from './support/sinks.js';
import { bufferSource } from './support/sources.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CS = 64 * KiB;

const memorySource = (bytes: Buffer): ByteSource => bufferSource(bytes, 'hostile.qcow2');
const decodeAll = (source: ByteSource): ReturnType<typeof decodeSource> => decodeSource(source, openQcow2);

/**
 * A valid image from Strata's writer: 4 MiB, data in its first 3 clusters,
 * a zero cluster, a hole. Layout: header, L1 (cluster 1), refcount table (2),
 * refcount block (3), L2 table (4), data (5, 6, 7).
 */
async function valid(): Promise<Buffer> {
  const data = Buffer.alloc(4 * MiB);
  const rand = seeded(3);
  for (let i = 0; i < 3 * CS; i++) data[i] = Math.floor(rand() * 256);
  const sink = memoryByteSink();
  await writeQcow2(
    bufferContent(data, [
      { offset: 0, length: 3 * CS, kind: 'data' },
      { offset: 3 * CS, length: CS, kind: 'zero' },
      { offset: 4 * CS, length: 4 * MiB - 4 * CS, kind: 'hole' },
    ]),
    sink,
    {},
  );
  return sink.bytes();
}

const L1 = CS;
const L2 = 4 * CS;
const put64 = (buf: Buffer, at: number, value: bigint): number => buf.writeBigUInt64BE(value, at);
const COPIED = 1n << 63n;

async function refusal(bytes: Buffer): Promise<Error> {
  try {
    await decodeAll(memorySource(bytes));
  } catch (err) {
    return err as Error;
  }
  throw new Error('the image was accepted');
}

describe('qcow2 reader on hostile input', () => {
  it('the valid image reads back', async () => {
    const got = await decodeAll(memorySource(await valid()));
    expect([got.dataBytes, got.zeroBytes]).toEqual([3 * CS, CS]);
  });

  const cases: [string, (b: Buffer) => Buffer, RegExp, typeof ImageFormatError | typeof UnsupportedImageError][] = [
    ['a truncated file', (b) => b.subarray(0, 6 * CS + 100), /lies past the end of the file/, ImageFormatError],
    ['a file cut inside its header', (b) => b.subarray(0, 50), /ends inside the qcow2 header/, ImageFormatError],
    ['an L1 entry pointing past the end', (b) => (put64(b, L1, COPIED | BigInt(100 * CS)), b), /L2 table of L1 entry 0 at host offset 6553600 lies past the end/, ImageFormatError],
    ['an L1 entry not on a cluster boundary', (b) => (put64(b, L1, COPIED | BigInt(L2 + 512)), b), /not a cluster boundary/, ImageFormatError],
    ['an L2 entry not on a cluster boundary', (b) => (put64(b, L2, COPIED | BigInt(5 * CS + 512)), b), /points at host offset 328192, not a cluster boundary/, ImageFormatError],
    ['an L2 entry with reserved bits', (b) => (put64(b, L2, COPIED | (1n << 57n) | BigInt(5 * CS)), b), /reserved bits/, ImageFormatError],
    ['a data cluster referenced twice', (b) => (put64(b, L2 + 8, COPIED | BigInt(5 * CS)), b), /also used by/, ImageFormatError],
    ['a data cluster that is the L2 table', (b) => (put64(b, L2 + 8, COPIED | BigInt(L2)), b), /also used by/, ImageFormatError],
    ['a data cluster that is the header', (b) => (put64(b, L1, COPIED | 0n), put64(b, L1, COPIED | BigInt(L2)), put64(b, L2, COPIED | BigInt(CS)), b), /also used by/, ImageFormatError],
    ['a cluster mapped beyond the virtual size', (b) => (put64(b, L2 + 8 * 100, COPIED | BigInt(6 * CS)), b), /beyond the virtual size/, ImageFormatError],
    ['a compressed cluster that does not inflate', (b) => (put64(b, L2, (1n << 62n) | (3n << 54n) | BigInt(5 * CS + 7)), b), /does not inflate to 65536 bytes/, ImageFormatError],
    ['a huge L1 size', (b) => (b.writeUInt32BE(0x7fffffff, 36), b), /l1_size 2147483647 is above qemu's limit/, ImageFormatError],
    ['an L1 table past the end', (b) => (b.writeUInt32BE(100000, 36), b), /the L1 table \(100000 entries\) runs past the end/, ImageFormatError],
    ['an L1 size that maps less than the disk', (b) => (b.writeBigUInt64BE(BigInt(MiB) * 1024n, 24), b), /maps less than the virtual size/, ImageFormatError],
    ['a refcount order above 6', (b) => (b.writeUInt32BE(7, 96), b), /refcount_order 7 is above 6/, ImageFormatError],
    ['clusters of 2^30 bytes', (b) => (b.writeUInt32BE(30, 20), b), /cluster_bits 30 is outside 9..21/, ImageFormatError],
    ['an odd header length', (b) => (b.writeUInt32BE(108, 100), b), /header_length 108/, ImageFormatError],
    ['a header extension running past the first cluster', (b) => (b.writeUInt32BE(0x12345678, 112), b.writeUInt32BE(CS, 116), b), /runs past the first cluster/, ImageFormatError],
    ['a backing file name of 5000 bytes', (b) => (put64(b, 8, 512n), b.writeUInt32BE(5000, 16), b), /backing file name of 5000 bytes/, ImageFormatError],
    ['a corrupt flag', (b) => (put64(b, 72, 2n), b), /marked corrupt/, ImageFormatError],
    ['an unknown incompatible feature', (b) => (put64(b, 72, 1n << 20n), b), /the qcow2 incompatible feature bit 20 is not supported/, UnsupportedImageError],
    ['encryption', (b) => (b.writeUInt32BE(2, 32), b), /qcow2 encryption \(crypt_method LUKS\) is not supported/, UnsupportedImageError],
    ['an external data file', (b) => (put64(b, 72, 4n), b), /qcow2 external data file is not supported/, UnsupportedImageError],
    ['zstd compression', (b) => (put64(b, 72, 8n), b.writeUInt8(1, 104), b), /zstd compression of qcow2 clusters is not supported/, UnsupportedImageError],
    ['version 4', (b) => (b.writeUInt32BE(4, 4), b), /qcow2 version 4 is not supported/, UnsupportedImageError],
  ];
  for (const [what, damage, message, type] of cases) {
    it(`${what} is refused, naming it`, async () => {
      const err = await refusal(damage(Buffer.from(await valid())));
      expect(err).toBeInstanceOf(type);
      expect(err.message).toMatch(message);
      expect(err.message).toMatch(/^hostile\.qcow2: /);
    });
  }

  it('a dirty image reads, with a note', async () => {
    const b = Buffer.from(await valid());
    put64(b, 72, 1n);
    const got = await decodeAll(memorySource(b));
    expect(got.reader.notes.join()).toMatch(/marked dirty/);
    expect(got.dataBytes).toBe(3 * CS);
  });

  it('random damage to the header and tables is refused or read, never anything else, from a file and from a stream', async () => {
    const base = await valid();
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 0, max: 5 * CS + 200 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 12 }), fc.boolean(), async (flips, cluster0) => {
        const b = Buffer.from(base);
        // Half the cases aim at the header's fields, where a flip changes the most.
        for (const [at, value] of flips) b[cluster0 ? at % 128 : at] = value;
        for (const source of [memorySource(b), streamSource(Readable.from([b]), 'hostile.qcow2 (stream)')]) {
          try {
            await decodeAll(source);
          } catch (err) {
            if (!(err instanceof ImageFormatError || err instanceof UnsupportedImageError || err instanceof NotStreamableError)) throw err;
          }
        }
      }),
      { numRuns: propertyRuns(400, 150) },
    );
  });
});
