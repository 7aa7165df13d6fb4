import { afterEach, describe, expect, it, vi } from 'vitest';
import * as K from '../../src/nbd/constants.js';
import { NbdClient, SparseMemoryDevice } from '../../src/nbd/index.js';
import { RawPeer, serveDevices } from './support.js';
import { go, request, simpleReply } from './wire.js';

const MIB = 1024 * 1024;
const peers: RawPeer[] = [];
let served: Awaited<ReturnType<typeof serveDevices>> | undefined;

afterEach(async () => {
  for (const p of peers.splice(0)) p.destroy();
  await served?.close();
  served = undefined;
});

async function peer(port: number): Promise<RawPeer> {
  const p = await RawPeer.connect(port);
  peers.push(p);
  return p;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('connection slots', () => {
  it('caps the connections from one address, counts the refusals, and takes one again once a slot is free', async () => {
    served = await serveDevices([{ name: 'disk', device: new SparseMemoryDevice(MIB) }], { maxConnectionsPerAddress: 3 });
    const { server, port } = served;
    const held: RawPeer[] = [];
    for (let i = 0; i < 3; i++) {
      const p = await peer(port);
      await p.read(18);
      held.push(p);
    }
    for (let i = 0; i < 2; i++) await (await peer(port)).closedByServer();
    expect(server.stats.refused).toEqual({ connectionLimit: 0, perAddressLimit: 2, shuttingDown: 0 });
    held[0]!.destroy();
    await vi.waitFor(() => expect(server.connectionCount).toBe(2));
    const c = await NbdClient.connect({ port, export: 'disk' });
    await c.disconnect();
    expect(server.stats.refused.perAddressLimit).toBe(2);
  });

  it('counts refusals at the server-wide cap apart from the per-address ones', async () => {
    served = await serveDevices([{ name: 'disk', device: new SparseMemoryDevice(MIB) }], { maxConnections: 2, maxConnectionsPerAddress: 0 });
    const { server, port } = served;
    for (let i = 0; i < 2; i++) await (await peer(port)).read(18);
    await (await peer(port)).closedByServer();
    expect(server.stats.refused).toEqual({ connectionLimit: 1, perAddressLimit: 0, shuttingDown: 0 });
  });

  it('closes connections idle past the idle timeout, counts them, and keeps the busy ones', async () => {
    served = await serveDevices([{ name: 'disk', device: new SparseMemoryDevice(MIB) }], { idleTimeoutMs: 600 });
    const { server, port } = served;
    // Negotiated, then never a request.
    const idle = await peer(port);
    await go(idle, 'disk');
    // Replies nobody reads are no activity either, once the kernel's buffers are full.
    const stuck = await peer(port);
    await go(stuck, 'disk');
    stuck.socket.pause();
    const batch: Buffer[] = [];
    for (let i = 0; i < 64; i++) batch.push(request(K.CMD_READ, 0, BigInt(i), 0, MIB));
    stuck.send(...batch);
    // One that keeps asking stays.
    const busy = await peer(port);
    await go(busy, 'disk');
    const until = Date.now() + 2500;
    let cookie = 0n;
    while (Date.now() < until) {
      busy.send(request(K.CMD_FLUSH, 0, ++cookie, 0, 0));
      expect(await simpleReply(busy)).toEqual({ error: 0, cookie });
      await sleep(50);
    }
    await idle.closedByServer(1);
    // The stuck client reads nothing, so it cannot see the close: the server's side tells.
    expect(server.stats.idleClosed).toBe(2);
    expect(server.connectionCount).toBe(1);
    expect(busy.closed).toBe(false);
  });

  it('keeps idle connections open when no idle timeout is set (the default)', async () => {
    served = await serveDevices([{ name: 'disk', device: new SparseMemoryDevice(MIB) }]);
    const p = await peer(served.port);
    await go(p, 'disk');
    await sleep(1500);
    expect(p.closed).toBe(false);
    expect(served.server.stats.idleClosed).toBe(0);
  });

  it('drops a client that trickles its handshake past the deadline, and counts it', async () => {
    served = await serveDevices([{ name: 'disk', device: new SparseMemoryDevice(MIB) }], { handshakeTimeoutMs: 500 });
    const { server, port } = served;
    const p = await peer(port);
    await p.read(18);
    // Client flags, then an option header one byte at a time: always active, never done.
    p.send(Buffer.from([0, 0, 0, K.FLAG_C_FIXED_NEWSTYLE | K.FLAG_C_NO_ZEROES]));
    const option = Buffer.alloc(16);
    option.writeBigUInt64BE(K.IHAVEOPT, 0);
    option.writeUInt32BE(K.OPT_LIST, 8);
    for (let i = 0; i < 15 && !p.closed; i++) {
      p.send(option.subarray(i, i + 1));
      await sleep(200);
    }
    expect(p.closed).toBe(true);
    expect(server.stats.handshakeTimeouts).toBe(1);
    // A client that negotiates at once is not affected.
    const c = await NbdClient.connect({ port, export: 'disk' });
    await sleep(700);
    await c.read(0, 4096);
    await c.disconnect();
    expect(server.stats.handshakeTimeouts).toBe(1);
  });

  it('reads a plain connection into a buffer of its own, handshake and requests alike, and gives the buffer back when it closes', async () => {
    served = await serveDevices([{ name: 'disk', device: new SparseMemoryDevice(8 * MIB) }]);
    const { server, port } = served;
    const c = await NbdClient.connect({ port, export: 'disk' });
    expect(server.stats.ownReads).toBe(1);
    // Writes of every shape: a request split over reads, several in one read, one larger than the read buffer.
    const data = Buffer.alloc(3 * MIB + 123);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 12)) & 255;
    await Promise.all([c.write(data, 4096), c.write(data.subarray(0, 7), 1), c.write(data.subarray(0, 512), 7 * MIB)]);
    expect((await c.read(4096, data.length)).equals(data)).toBe(true);
    expect((await c.read(1, 7)).equals(data.subarray(0, 7))).toBe(true);
    expect((await c.read(7 * MIB, 512)).equals(data.subarray(0, 512))).toBe(true);
    await c.disconnect();
    await vi.waitFor(() => expect(server.stats.ownReads).toBe(0));
    expect(server.stats.buffers.inUseBytes).toBe(0);
  });
});
