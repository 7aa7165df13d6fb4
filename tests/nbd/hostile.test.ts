import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import * as K from '../../src/nbd/constants.js';
import { NbdClient, SparseMemoryDevice } from '../../src/nbd/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';
import { RawPeer, serveDevices } from './support.js';
import { go, goData, greet, metaData, option, optReply, request, simpleReply, structuredReply, u32 } from './wire.js';

const SIZE = 16 * 1024 * 1024;
let served: Awaited<ReturnType<typeof serveDevices>>;
let reads = 0;
const rw = new SparseMemoryDevice(SIZE);
const ro = new MemoryDevice({ size: SIZE });
const peers: RawPeer[] = [];

async function peer(halfOpen = false): Promise<RawPeer> {
  const p = await RawPeer.connect(served.port, halfOpen);
  peers.push(p);
  return p;
}

/** A well-behaved client still gets served: the server survived whatever came before. */
async function stillServes(): Promise<void> {
  const c = await NbdClient.connect({ port: served.port, export: 'rw' });
  await c.write(pattern(4096, 77), 4096);
  expect((await c.read(4096, 4096)).equals(pattern(4096, 77))).toBe(true);
  await c.disconnect();
}

beforeAll(async () => {
  const origRead = rw.read.bind(rw);
  rw.read = (b, o) => {
    reads++;
    return origRead(b, o);
  };
  served = await serveDevices(
    [
      { name: 'rw', device: rw },
      { name: 'ro', device: ro, readOnly: true },
    ],
    { maxConnections: 8 },
  );
});

afterEach(() => {
  for (const p of peers.splice(0)) p.destroy();
});

afterAll(async () => {
  await served.close();
});

describe('handshake against hostile or odd clients', () => {
  it('drops a client that sets unknown client flags', async () => {
    const p = await peer();
    await greet(p, 0x80 | K.FLAG_C_FIXED_NEWSTYLE);
    await p.closedByServer();
  });

  it('drops a client whose option lacks the IHAVEOPT magic', async () => {
    const p = await peer();
    await greet(p);
    const bad = option(K.OPT_LIST);
    bad.writeUInt32BE(0xdeadbeef, 0);
    p.send(bad);
    await p.closedByServer();
  });

  it('answers unknown and unsupported options with NBD_REP_ERR_UNSUP and keeps negotiating', async () => {
    const p = await peer();
    await greet(p);
    for (const opt of [K.OPT_PEEK_EXPORT, K.OPT_EXTENDED_HEADERS, 99, 0x7fffffff]) {
      p.send(option(opt, Buffer.from('junk')));
      const r = await optReply(p);
      expect([r.option, r.type]).toEqual([opt, K.REP_ERR_UNSUP]);
    }
    p.send(option(K.OPT_LIST));
    const names: string[] = [];
    for (;;) {
      const r = await optReply(p);
      if (r.type === K.REP_ACK) break;
      expect(r.type).toBe(K.REP_SERVER);
      names.push(r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
    }
    expect(names).toEqual(['rw', 'ro']);
  });

  it('refuses malformed options with NBD_REP_ERR_INVALID, an unknown export with NBD_REP_ERR_UNKNOWN, STARTTLS with NBD_REP_ERR_POLICY', async () => {
    const p = await peer();
    await greet(p);
    const expectReply = async (msg: Buffer, type: number): Promise<void> => {
      p.send(msg);
      expect((await optReply(p)).type).toBe(type);
    };
    await expectReply(option(K.OPT_LIST, Buffer.from('x')), K.REP_ERR_INVALID);
    await expectReply(option(K.OPT_GO, Buffer.from([0, 0, 0, 50, 1, 2])), K.REP_ERR_INVALID);
    await expectReply(option(K.OPT_INFO, goData('nope')), K.REP_ERR_UNKNOWN);
    await expectReply(option(K.OPT_GO, goData('../../../etc/passwd')), K.REP_ERR_UNKNOWN);
    await expectReply(option(K.OPT_SET_META_CONTEXT, metaData('rw', [K.BASE_ALLOCATION])), K.REP_ERR_INVALID);
    await expectReply(option(K.OPT_STARTTLS), K.REP_ERR_POLICY);
    await expectReply(option(K.OPT_STRUCTURED_REPLY, Buffer.from('x')), K.REP_ERR_INVALID);
    await expectReply(option(K.OPT_STRUCTURED_REPLY), K.REP_ACK);
    await expectReply(option(K.OPT_LIST_META_CONTEXT, Buffer.from([0, 0, 0, 2, 0x72, 0x77, 0, 0, 0, 1, 0, 0, 0, 99])), K.REP_ERR_INVALID);
    p.send(option(K.OPT_LIST_META_CONTEXT, metaData('rw', ['base:'])));
    const ctx = await optReply(p);
    expect([ctx.type, ctx.data.subarray(4).toString()]).toEqual([K.REP_META_CONTEXT, K.BASE_ALLOCATION]);
    expect((await optReply(p)).type).toBe(K.REP_ACK);
    await expectReply(option(K.OPT_SET_META_CONTEXT, metaData('rw', ['x-other:thing'])), K.REP_ACK);
    // Option data beyond what any option needs is skipped, refused, and the stream stays in step.
    await expectReply(option(K.OPT_GO, Buffer.alloc(70_000)), K.REP_ERR_TOO_BIG);
    p.send(option(K.OPT_ABORT));
    expect((await optReply(p)).type).toBe(K.REP_ACK);
    await p.closedByServer();
  });

  it('closes on EXPORT_NAME for an unknown export, and pads EXPORT_NAME replies only without NO_ZEROES', async () => {
    const bad = await peer();
    await greet(bad);
    bad.send(option(K.OPT_EXPORT_NAME, Buffer.from('missing')));
    await bad.closedByServer();

    const padded = await peer();
    await greet(padded, K.FLAG_C_FIXED_NEWSTYLE);
    padded.send(option(K.OPT_EXPORT_NAME, Buffer.from('ro')));
    const reply = await padded.read(134);
    expect(Number(reply.readBigUInt64BE(0))).toBe(SIZE);
    expect(reply.readUInt16BE(8) & K.FLAG_READ_ONLY).toBe(K.FLAG_READ_ONLY);
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
    padded.send(request(K.CMD_READ, 0, 7n, 0, 512));
    expect(await simpleReply(padded)).toEqual({ error: 0, cookie: 7n });
    expect((await padded.read(512)).every((b) => b === 0)).toBe(true);

    const bare = await peer();
    await greet(bare);
    bare.send(option(K.OPT_EXPORT_NAME, Buffer.from('')), request(K.CMD_FLUSH, 0, 1n, 0, 0));
    const head = await bare.read(10);
    expect(Number(head.readBigUInt64BE(0))).toBe(SIZE);
    // The next bytes are the flush reply: no padding came between.
    expect(await simpleReply(bare)).toEqual({ error: 0, cookie: 1n });
  });

  it('drops a client that does not finish the handshake in time', async () => {
    const quick = await serveDevices([{ name: 'q', device: new MemoryDevice({ size: 4096 }) }], { handshakeTimeoutMs: 200 });
    try {
      const p = await RawPeer.connect(quick.port);
      peers.push(p);
      await greet(p);
      await p.closedByServer(3000);
    } finally {
      await quick.close();
    }
  });

  it('closes a connection whose client never closes after ABORT or DISC', async () => {
    const aborter = await peer(true);
    await greet(aborter);
    aborter.send(option(K.OPT_ABORT));
    expect((await optReply(aborter)).type).toBe(K.REP_ACK);
    const discer = await peer(true);
    await go(discer, 'rw');
    discer.send(request(K.CMD_DISC, 0, 1n, 0, 0));
    // Neither peer closes its side; the server lets go of both shortly after.
    await vi.waitFor(() => expect(served.server.connectionCount).toBe(0), { timeout: 4000, interval: 100 });
  });

  it('survives random bytes at every point of the handshake', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), fc.boolean(), async (bytes, afterGreeting) => {
        const p = await RawPeer.connect(served.port);
        try {
          if (afterGreeting) await greet(p);
          else await p.read(18);
          p.send(Buffer.from(bytes));
          await new Promise((r) => setTimeout(r, 2));
        } finally {
          p.destroy();
        }
      }),
      { numRuns: propertyRuns(200, 40) },
    );
    await stillServes();
  });
});

describe('transmission against hostile or odd clients', () => {
  it('closes only the connection that sends a bad request magic', async () => {
    const p = await peer();
    await go(p, 'rw');
    const bad = request(K.CMD_READ, 0, 1n, 0, 512);
    bad.writeUInt32BE(0x21e41c71, 0);
    p.send(bad);
    await p.closedByServer();
    await stillServes();
  });

  it('answers unknown commands, bad flags, oversized and out-of-range requests with NBD errors, in step', async () => {
    const p = await peer();
    const { flags } = await go(p, 'rw');
    expect(flags & K.FLAG_SEND_DF).toBe(0);
    const cases: [Buffer, number][] = [
      [request(99, 0, 1n, 0, 0), K.NBD_EINVAL],
      [request(K.CMD_READ, 0x8000, 2n, 0, 512), K.NBD_EINVAL],
      [request(K.CMD_READ, K.CMD_FLAG_DF, 3n, 0, 512), K.NBD_EINVAL],
      [request(K.CMD_READ, 0, 4n, 0, K.MAX_PAYLOAD + 1), K.NBD_EINVAL],
      [request(K.CMD_READ, 0, 5n, SIZE - 256, 512), K.NBD_EINVAL],
      [request(K.CMD_READ, 0, 6n, 0xffffffffffffff00n, 512), K.NBD_EINVAL],
      [request(K.CMD_FLUSH, 0, 7n, 4096, 0), K.NBD_EINVAL],
      [request(K.CMD_BLOCK_STATUS, 0, 8n, 0, 4096), K.NBD_EINVAL],
      [request(K.CMD_TRIM, 0, 9n, SIZE, 1), K.NBD_EINVAL],
      [request(K.CMD_CACHE, 0, 10n, SIZE, 1), K.NBD_EINVAL],
      [request(K.CMD_WRITE_ZEROES, 0, 11n, SIZE - 1, 2), K.NBD_ENOSPC],
    ];
    for (const [msg] of cases) p.send(msg);
    // A write that is rejected still carries its payload; the server must consume it.
    p.send(request(K.CMD_WRITE, 0, 12n, SIZE - 100, 200), Buffer.alloc(200, 1));
    p.send(request(K.CMD_WRITE, 0x40, 13n, 0, 300), Buffer.alloc(300, 1));
    const got = new Map<bigint, number>();
    for (let i = 0; i < cases.length + 2; i++) {
      const r = await simpleReply(p);
      got.set(r.cookie, r.error);
    }
    cases.forEach(([msg, error]) => expect(got.get(msg.readBigUInt64BE(8)), `cookie ${msg.readBigUInt64BE(8)}`).toBe(error));
    expect(got.get(12n)).toBe(K.NBD_ENOSPC);
    expect(got.get(13n)).toBe(K.NBD_EINVAL);
    // Cookies come back as the same 8 bytes, even ones beyond 2^53.
    p.send(request(K.CMD_FLUSH, 0, 0xfedcba9876543210n, 0, 0));
    expect(await simpleReply(p)).toEqual({ error: 0, cookie: 0xfedcba9876543210n });
  });

  it('answers zero-length reads, writes, trims and zeroes without error', async () => {
    const p = await peer();
    await go(p, 'rw');
    p.send(request(K.CMD_WRITE, K.CMD_FLAG_FUA, 1n, 4096, 0), request(K.CMD_READ, 0, 2n, SIZE, 0), request(K.CMD_TRIM, 0, 3n, 0, 0), request(K.CMD_WRITE_ZEROES, 0, 4n, 0, 0));
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await simpleReply(p));
    expect(got.sort((a, b) => Number(a.cookie - b.cookie))).toEqual([1n, 2n, 3n, 4n].map((cookie) => ({ error: 0, cookie })));
  });

  it('consumes a write payload over the 32 MiB maximum, refuses it, and stays in step', async () => {
    const p = await peer();
    await go(p, 'rw', { structured: true });
    const length = K.MAX_PAYLOAD + 4096;
    p.send(request(K.CMD_WRITE, 0, 1n, 0, length));
    const slab = Buffer.alloc(1024 * 1024, 0xee);
    for (let left = length; left > 0; left -= slab.length) p.send(slab.subarray(0, Math.min(left, slab.length)));
    p.send(request(K.CMD_READ, 0, 2n, 0, 4096));
    const first = await structuredReply(p);
    expect(first[0]!.type).toBe(K.REPLY_TYPE_ERROR);
    expect(first[0]!.payload.readUInt32BE(0)).toBe(K.NBD_EINVAL);
    const second = await structuredReply(p);
    expect(second.map((c) => [c.cookie, c.type])).toEqual([[2n, K.REPLY_TYPE_OFFSET_DATA]]);
    // Nothing of the refused payload reached the export.
    expect(second[0]!.payload.subarray(8).includes(0xee)).toBe(false);
  });

  it('refuses writes, trims and zeroes on a read-only export with EPERM', async () => {
    const p = await peer();
    const { flags } = await go(p, 'ro', { structured: true });
    expect(flags & K.FLAG_READ_ONLY).toBe(K.FLAG_READ_ONLY);
    expect(flags & K.FLAG_SEND_TRIM).toBe(0);
    p.send(request(K.CMD_WRITE, 0, 1n, 0, 512), Buffer.alloc(512, 9), request(K.CMD_TRIM, 0, 2n, 0, 512), request(K.CMD_WRITE_ZEROES, 0, 3n, 0, 512));
    for (let i = 0; i < 3; i++) {
      const [c] = await structuredReply(p);
      expect(c!.type).toBe(K.REPLY_TYPE_ERROR);
      expect(c!.payload.readUInt32BE(0)).toBe(K.NBD_EPERM);
    }
    const back = Buffer.alloc(512);
    await ro.read(back, 0);
    expect(back.every((b) => b === 0)).toBe(true);
  });

  it('sends holes of a structured read as OFFSET_HOLE chunks and data as OFFSET_DATA, DONE on the last', async () => {
    await rw.write(pattern(65536, 3), 2 * 1024 * 1024 + 65536);
    const p = await peer();
    await go(p, 'rw', { structured: true, meta: true });
    p.send(request(K.CMD_READ, 0, 5n, 2 * 1024 * 1024, 3 * 65536));
    const chunks = await structuredReply(p);
    expect(chunks.map((c) => c.type)).toEqual([K.REPLY_TYPE_OFFSET_HOLE, K.REPLY_TYPE_OFFSET_DATA, K.REPLY_TYPE_OFFSET_HOLE]);
    expect(chunks.map((c) => c.flags & K.REPLY_FLAG_DONE)).toEqual([0, 0, K.REPLY_FLAG_DONE]);
    expect(Number(chunks[1]!.payload.readBigUInt64BE(0))).toBe(2 * 1024 * 1024 + 65536);
    expect(chunks[1]!.payload.subarray(8).equals(pattern(65536, 3))).toBe(true);
    expect(chunks[2]!.payload.readUInt32BE(8)).toBe(65536);
    // With DF the same read comes as one data chunk, zeroes included.
    p.send(request(K.CMD_READ, K.CMD_FLAG_DF, 6n, 2 * 1024 * 1024, 3 * 65536));
    const df = await structuredReply(p);
    expect(df.map((c) => c.type)).toEqual([K.REPLY_TYPE_OFFSET_DATA]);
    expect(df[0]!.payload.length).toBe(8 + 3 * 65536);
  });

  it('finishes requests in flight on DISC, sends nothing for it, and closes', async () => {
    const p = await peer();
    await go(p, 'rw');
    p.send(request(K.CMD_WRITE, K.CMD_FLAG_FUA, 1n, 8192, 4096), pattern(4096, 8), request(K.CMD_DISC, 0, 2n, 0, 0), request(K.CMD_FLUSH, 0, 3n, 0, 0));
    expect(await simpleReply(p)).toEqual({ error: 0, cookie: 1n });
    await p.closedByServer();
    const back = Buffer.alloc(4096);
    await rw.read(back, 8192);
    expect(back.equals(pattern(4096, 8))).toBe(true);
  });

  it('survives a client that vanishes halfway through a write payload, and releases nothing it should keep', async () => {
    for (let i = 0; i < 5; i++) {
      const p = await peer();
      await go(p, 'rw');
      p.send(request(K.CMD_READ, 0, 1n, 0, 1024 * 1024), request(K.CMD_WRITE, 0, 2n, 0, 1024 * 1024), Buffer.alloc(300_000, 1));
      p.destroy();
    }
    await stillServes();
    await vi.waitFor(() => expect(served.server.connectionCount).toBe(0));
    // Every connection gone, no export is held open.
    expect(served.server.openExports).toBe(0);
  });

  it('stops reading from a client that never reads its replies: the work done stays bounded', async () => {
    const p = await peer();
    await go(p, 'rw');
    p.socket.pause();
    const before = reads;
    const batch: Buffer[] = [];
    for (let i = 0; i < 2000; i++) batch.push(request(K.CMD_READ, 0, BigInt(i), 0, 1024 * 1024));
    p.send(...batch);
    await new Promise((r) => setTimeout(r, 1500));
    const done = reads - before;
    // 2000 MiB were asked for; the server stops at the connection's bound (32 MiB by default) plus what the kernel's socket buffers took.
    expect(done).toBeGreaterThan(10);
    expect(done).toBeLessThan(300);
    p.destroy();
    await stillServes();
  });

  it('turns away connections beyond the cap and serves again once they go', async () => {
    const held: RawPeer[] = [];
    for (let i = 0; i < 8; i++) {
      const p = await peer();
      await p.read(18);
      held.push(p);
    }
    const extra = await peer();
    await extra.closedByServer();
    for (const p of held) p.destroy();
    await vi.waitFor(() => expect(served.server.connectionCount).toBe(0));
    await stillServes();
  });

  it('survives random request streams after the handshake', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
            fc
              .record({ type: fc.integer({ min: 0, max: 9 }), flags: fc.integer({ min: 0, max: 0x3f }), offset: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), length: fc.integer({ min: 0, max: 70_000 }) })
              .map((r) => request(r.type, r.flags, 1n, r.offset, r.length)),
          ),
          { maxLength: 8 },
        ),
        async (parts) => {
          const p = await RawPeer.connect(served.port);
          try {
            await go(p, 'rw', { structured: true, meta: true });
            p.send(...parts, u32(0));
            await new Promise((r) => setTimeout(r, 5));
          } finally {
            p.destroy();
          }
        },
      ),
      { numRuns: propertyRuns(150, 30) },
    );
    await stillServes();
  });
});
