import { createHash } from 'node:crypto';

/**
 * The files the guest writes, described so that the host can compute every
 * byte independently. Each file is zeroes (a hole where ext4 makes one) except
 * for segments cut from an endless repetition of a pattern blob, starting at a
 * per-segment offset into it. The blob's length is prime, so its period never
 * lines up with 512-byte or 4 KiB blocks: a block written to the wrong place,
 * or read from the wrong place, changes a checksum.
 */
export interface PayloadSegment {
  /** Byte offset in the file. */
  at: number;
  len: number;
  /** Offset into the pattern blob where this segment's bytes begin. */
  from: number;
}

export interface PayloadFile {
  /** Path relative to the data directory. */
  name: string;
  size: number;
  segments: PayloadSegment[];
}

export const PATTERN_LENGTH = 999_983;
const KiB = 1024;
const MiB = 1024 * KiB;

/** Pattern bytes from a xorshift32 generator, so the same seed gives the same blob everywhere. */
export function patternBlob(seed: number): Buffer {
  const blob = Buffer.alloc(PATTERN_LENGTH);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < PATTERN_LENGTH; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    blob[i] = x & 0xff;
  }
  return blob;
}

const whole = (name: string, size: number, from: number): PayloadFile => ({
  name,
  size,
  segments: size > 0 ? [{ at: 0, len: size, from: from % PATTERN_LENGTH }] : [],
});

/** Odd and even sizes around block edges, a few large files, a sparse one and many small ones. */
export function payloadFiles(): PayloadFile[] {
  const files: PayloadFile[] = [
    whole('empty', 0, 0),
    whole('one-byte', 1, 11),
    whole('block-minus-one', 4 * KiB - 1, 4093),
    whole('block', 4 * KiB, 12_345),
    whole('block-plus-one', 4 * KiB + 1, 77_777),
    whole('odd-64k', 64 * KiB + 7, 500_001),
    whole('one-mib', MiB, 999_000),
    whole('three-mib-odd', 3 * MiB + 511, 31_337),
    whole('sixteen-mib', 16 * MiB, 271_828),
    {
      name: 'sparse',
      size: 32 * MiB,
      segments: [
        { at: 0, len: 4 * KiB, from: 17 },
        { at: 8 * MiB + 512, len: MiB, from: 5 },
        { at: 31 * MiB - 3, len: MiB + 3, from: 654_321 },
      ],
    },
  ];
  for (let i = 0; i < 40; i++) {
    files.push(whole(`small/s${String(i).padStart(2, '0')}`, 100 + i * 211, i * 104_729));
  }
  return files;
}

export function expectedContent(file: PayloadFile, blob: Buffer): Buffer {
  const out = Buffer.alloc(file.size);
  for (const s of file.segments) {
    let written = 0;
    let src = s.from;
    while (written < s.len) {
      const n = Math.min(s.len - written, blob.length - src);
      blob.copy(out, s.at + written, src, src + n);
      written += n;
      src = 0;
    }
  }
  return out;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** name → sha256 of every payload file, computed on the host. */
export function expectedSums(files: PayloadFile[], blob: Buffer): Map<string, string> {
  return new Map(files.map((f) => [f.name, sha256(expectedContent(f, blob))]));
}

/**
 * The files the soak phase writes one after another until the host says stop:
 * each a different length and a different cut of the pattern, and only the
 * newest ROUND_KEEP kept, so later rounds reuse blocks earlier ones freed. A
 * write lost while the disk moves leaves a block of an older file behind and
 * changes a checksum.
 */
export const ROUND_BYTES = MiB + 13;
export const ROUND_STEP = 4099;
export const ROUND_FROM_STEP = 7919 * 37;
export const ROUND_KEEP = 3;

export function roundFile(round: number): PayloadFile {
  const size = ROUND_BYTES + round * ROUND_STEP;
  return { name: `rounds/r${round}`, size, segments: [{ at: 0, len: size, from: (round * ROUND_FROM_STEP) % PATTERN_LENGTH }] };
}
