import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CMD_READ, CMD_WRITE, MAX_PAYLOAD, REQUEST_MAGIC } from '../../src/nbd/constants.js';
import { BufferPool } from '../../src/nbd/buffer-pool.js';
import { PLACE_MIN, RequestParser, type Request } from '../../src/nbd/request-parser.js';
import type { ReadPlacement } from '../../src/nbd/socket-reads.js';
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

  it('has the rest of a large payload read straight into its buffer where the socket allows, with the same requests as from chunks', () => {
    const big = fc.record({ cookie: fc.nat({ max: 0xffffffff }), length: fc.integer({ min: 1, max: 3 * PLACE_MIN }), seed: fc.nat({ max: 255 }), write: fc.boolean() });
    fc.assert(
      fc.property(fc.array(big, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 2 * PLACE_MIN }), { minLength: 1, maxLength: 30 }), (reqs, reads) => {
        const wire = reqs.map((r) => ({
          flags: 0,
          type: r.write ? CMD_WRITE : CMD_READ,
          cookie: [0, r.cookie] as [number, number],
          offsetHi: 0,
          offsetLo: 0,
          length: r.length,
          payload: r.write ? Buffer.from(Array.from({ length: r.length }, (_, i) => (r.seed + i * 13) & 255)) : undefined,
        }));
        const socket = new FakeSocket(Buffer.concat(wire.map(encode)), reads);
        const got: Request[] = [];
        const parser = new RequestParser({ request: (r) => got.push({ ...r, payload: r.payload ? Buffer.from(r.payload) : undefined }), fatal: (m) => expect.fail(m), full: () => false }, new BufferPool(), socket);
        socket.run(parser);
        expect(got.map((g) => [g.type, g.cookieLo, g.length])).toEqual(wire.map((w) => [w.type, w.cookie[1], w.length]));
        got.forEach((g, i) => {
          if (wire[i]!.payload) expect(g.payload!.equals(wire[i]!.payload!)).toBe(true);
        });
        // Only a large remainder is placed, and only one asked for while a read is delivered.
        for (const n of socket.placedSizes) expect(n).toBeGreaterThan(0);
        if (reqs.some((r) => r.write && r.length >= 2 * PLACE_MIN) && reads.every((n) => n < PLACE_MIN / 2)) expect(socket.placedSizes.length).toBeGreaterThan(0);
      }),
      { numRuns: propertyRuns(200) },
    );
  });

  it('after a large write reads the next header alone, so that a large write after it is read in place whole', () => {
    const length = 3 * PLACE_MIN;
    const write = (c: number) => encode({ flags: 0, type: CMD_WRITE, cookie: [0, c], offsetHi: 0, offsetLo: 0, length, payload: Buffer.alloc(length, c) });
    const read = encode({ flags: 0, type: CMD_READ, cookie: [0, 3], offsetHi: 0, offsetLo: 0, length: 4096, payload: undefined });
    const socket = new FakeSocket(Buffer.concat([write(1), write(2), read]), [4 * PLACE_MIN]);
    const got: Request[] = [];
    const parser = new RequestParser({ request: (r) => got.push({ ...r, payload: r.payload ? Buffer.from(r.payload) : undefined }), fatal: (m) => expect.fail(m), full: () => false }, new BufferPool(), socket);
    socket.run(parser);
    // The first payload's start came with its header into the connection's buffer (2 * PLACE_MIN there); the second came in place whole.
    expect(socket.placedSizes).toEqual([length + 28 - 2 * PLACE_MIN, 28, length, 28]);
    expect(got.map((r) => [r.cookieLo, r.payload?.equals(Buffer.alloc(length, r.cookieLo)) ?? 'none'])).toEqual([
      [1, true],
      [2, true],
      [3, 'none'],
    ]);
  });

  it('gives a payload buffer back only once no placed read can land in it any more', () => {
    const pool = new BufferPool();
    const socket = new FakeSocket(encode({ flags: 0, type: CMD_WRITE, cookie: [0, 1], offsetHi: 0, offsetLo: 0, length: 4 * PLACE_MIN, payload: Buffer.alloc(4 * PLACE_MIN, 7) }), [1000]);
    const parser = new RequestParser({ request: () => expect.fail('the payload is not complete'), fatal: (m) => expect.fail(m), full: () => false }, pool, socket);
    socket.step(parser);
    expect(socket.next).toBeDefined();
    const used = pool.stats.inUseBytes;
    expect(used).toBeGreaterThan(0);
    parser.stop();
    // Still the target of the read under way: not back in the pool yet.
    expect(pool.stats.inUseBytes).toBe(used);
    socket.settleAbandoned();
    expect(pool.stats.inUseBytes).toBe(0);
  });
});

/** A connection that reads the stream in the given sizes, into its own buffer or into the target the parser placed during the last delivery. */
class FakeSocket implements ReadPlacement {
  private delivering = false;
  private target: Buffer | undefined;
  next: Buffer | undefined;
  private abandoned: (() => void) | undefined;
  private pos = 0;
  private turn = 0;
  readonly placedSizes: number[] = [];
  private readonly own = Buffer.alloc(2 * PLACE_MIN);

  constructor(
    private readonly stream: Buffer,
    private readonly reads: number[],
  ) {}

  place(target: Buffer): boolean {
    if (!this.delivering) return false;
    this.target = target;
    return true;
  }

  abandon(free: () => void): void {
    this.target = undefined;
    if (this.next) this.abandoned = free;
    else free();
  }

  settleAbandoned(): void {
    this.next = undefined;
    this.abandoned?.();
  }

  run(parser: RequestParser): void {
    while (this.pos < this.stream.length) this.step(parser);
  }

  step(parser: RequestParser): void {
    const size = this.reads[this.turn++ % this.reads.length]!;
    const into = this.next ?? this.own;
    const n = this.stream.copy(into, 0, this.pos, this.pos + Math.min(size, into.length));
    this.pos += n;
    this.delivering = true;
    if (this.next) {
      this.next = undefined;
      this.placedSizes.push(n);
      parser.placedRead(n);
    } else {
      parser.push(this.own.subarray(0, n), true);
      this.own.fill(0xa5);
    }
    this.delivering = false;
    this.next = this.target;
    this.target = undefined;
  }
}
