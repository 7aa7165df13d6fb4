import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CMD_READ, CMD_WRITE, MAX_PAYLOAD, REQUEST_MAGIC } from '../../src/nbd/constants.js';
import { RequestParser, type Request } from '../../src/nbd/request-parser.js';
import { propertyRuns } from '../support/scratch.js';

interface Wire {
  flags: number;
  type: number;
  cookie: [number, number];
  offsetHi: number;
  offsetLo: number;
  length: number;
  payload: Buffer | undefined;
}

function encode(r: Wire): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt16BE(r.flags, 4);
  h.writeUInt16BE(r.type, 6);
  h.writeUInt32BE(r.cookie[0], 8);
  h.writeUInt32BE(r.cookie[1], 12);
  h.writeUInt32BE(r.offsetHi, 16);
  h.writeUInt32BE(r.offsetLo, 20);
  h.writeUInt32BE(r.length, 24);
  return r.payload ? Buffer.concat([h, r.payload]) : h;
}

const wireRequest: fc.Arbitrary<Wire> = fc
  .record({
    flags: fc.integer({ min: 0, max: 0xffff }),
    type: fc.oneof(fc.constant(CMD_WRITE), fc.constant(CMD_READ), fc.integer({ min: 0, max: 0xffff })),
    cookie: fc.tuple(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff })),
    offsetHi: fc.nat({ max: 0xffffffff }),
    offsetLo: fc.nat({ max: 0xffffffff }),
    length: fc.integer({ min: 0, max: 3000 }),
    seed: fc.nat(),
  })
  .map((r) => ({
    ...r,
    payload: r.type === CMD_WRITE && r.length > 0 ? Buffer.from(Array.from({ length: r.length }, (_, i) => (r.seed + i * 7) & 255)) : undefined,
  }));

/** Splits a stream at random points, as TCP may. */
function chop(stream: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, stream.length]) {
    if (p > prev) out.push(stream.subarray(prev, p));
    prev = p;
  }
  return out;
}

describe('request parser', () => {
  it('yields the same requests, cookies and payloads however the stream is split into chunks', () => {
    fc.assert(
      fc.property(fc.array(wireRequest, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 40 }), (reqs, cuts) => {
        const got: Request[] = [];
        const parser = new RequestParser({ request: (r) => got.push({ ...r, payload: r.payload ? Buffer.from(r.payload) : undefined }), fatal: (m) => expect.fail(m), full: () => false });
        for (const c of chop(Buffer.concat(reqs.map(encode)), cuts)) parser.push(c);
        expect(got.length).toBe(reqs.length);
        reqs.forEach((r, i) => {
          const g = got[i]!;
          expect([g.flags, g.type, g.cookieHi, g.cookieLo, g.length]).toEqual([r.flags, r.type, r.cookie[0], r.cookie[1], r.length]);
          expect(g.offset).toBe(r.offsetHi * 2 ** 32 + r.offsetLo);
          if (r.payload) expect(g.payload!.equals(r.payload)).toBe(true);
          else expect(g.payload).toBeUndefined();
        });
        expect(parser.buffered).toBe(0);
      }),
      { numRuns: propertyRuns(1000) },
    );
  });

  it('skips an oversized write payload without keeping it and stays in step', () => {
    const got: Request[] = [];
    const parser = new RequestParser({ request: (r) => got.push(r), fatal: (m) => expect.fail(m), full: () => false });
    const big = MAX_PAYLOAD + 1;
    parser.push(encode({ flags: 0, type: CMD_WRITE, cookie: [0, 1], offsetHi: 0, offsetLo: 0, length: big, payload: undefined }));
    const slab = Buffer.alloc(1024 * 1024);
    for (let left = big; left > 0; left -= slab.length) parser.push(slab.subarray(0, Math.min(slab.length, left)));
    parser.push(encode({ flags: 0, type: CMD_READ, cookie: [0, 2], offsetHi: 0, offsetLo: 512, length: 512, payload: undefined }));
    expect(got.map((r) => [r.cookieLo, r.length, r.payload === undefined])).toEqual([
      [1, big, true],
      [2, 512, true],
    ]);
  });

  it('stops at a bad magic and reports the stream as unparseable', () => {
    const reasons: string[] = [];
    const got: Request[] = [];
    const parser = new RequestParser({ request: (r) => got.push(r), fatal: (m) => reasons.push(m), full: () => false });
    const good = encode({ flags: 0, type: CMD_READ, cookie: [0, 1], offsetHi: 0, offsetLo: 0, length: 512, payload: undefined });
    const bad = Buffer.from(good);
    bad.writeUInt32BE(0x12560953, 0);
    parser.push(Buffer.concat([good, bad, good]));
    expect(got.length).toBe(1);
    expect(reasons).toEqual(['bad request magic 0x12560953']);
  });

  it('holds requests back while the sink is full and resumes where it stopped', () => {
    let full = true;
    const got: Request[] = [];
    const parser = new RequestParser({ request: (r) => got.push(r), fatal: (m) => expect.fail(m), full: () => full });
    const one = (c: number) => encode({ flags: 0, type: CMD_READ, cookie: [0, c], offsetHi: 0, offsetLo: 0, length: 1, payload: undefined });
    parser.push(Buffer.concat([one(1), one(2)]));
    expect(got.length).toBe(0);
    full = false;
    parser.resume();
    expect(got.map((r) => r.cookieLo)).toEqual([1, 2]);
  });

  it('keeps nothing of a transient chunk: the reused read buffer of the socket may be overwritten after every push, stalls included', () => {
    fc.assert(
      fc.property(fc.array(wireRequest, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 40 }), fc.array(fc.boolean(), { maxLength: 60 }), (reqs, cuts, stalls) => {
        const got: Request[] = [];
        let asked = 0;
        let stalled = false;
        const full = (): boolean => (stalled = stalls[asked++ % Math.max(stalls.length, 1)] ?? false);
        // The payloads are kept as handed over, not copied: a view of the read buffer would show the scribbles.
        const parser = new RequestParser({ request: (r) => got.push(r), fatal: (m) => expect.fail(m), full });
        const readBuffer = Buffer.alloc(4096);
        for (const c of chop(Buffer.concat(reqs.map(encode)), cuts)) {
          for (let at = 0; at < c.length; at += readBuffer.length) {
            const n = c.copy(readBuffer, 0, at, at + readBuffer.length);
            parser.push(readBuffer.subarray(0, n), true);
            readBuffer.fill(0xa5);
            // The socket stays paused while the parser is stalled; the sink makes room later.
            for (let tries = 0; stalled && tries < 10; tries++) {
              stalled = false;
              parser.resume();
            }
            if (stalled) {
              stalls = [];
              parser.resume();
            }
          }
        }
        expect(got.length).toBe(reqs.length);
        reqs.forEach((r, i) => {
          const g = got[i]!;
          expect([g.type, g.cookieHi, g.cookieLo, g.length]).toEqual([r.type, r.cookie[0], r.cookie[1], r.length]);
          if (r.payload) expect(g.payload!.equals(r.payload)).toBe(true);
        });
        expect(parser.buffered).toBe(0);
      }),
      { numRuns: propertyRuns(1000) },
    );
  });
});
