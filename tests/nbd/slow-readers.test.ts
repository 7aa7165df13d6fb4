import { afterEach, describe, expect, it, vi } from 'vitest';
import * as K from '../../src/nbd/constants.js';
import { NbdClient, SparseMemoryDevice } from '../../src/nbd/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { RawPeer, serveDevices } from './support.js';
import { go, request } from './wire.js';

const MIB = 1024 * 1024;
const BUDGET = 64 * MIB;
const peers: RawPeer[] = [];
let served: Awaited<ReturnType<typeof serveDevices>> | undefined;

afterEach(async () => {
  for (const p of peers.splice(0)) p.destroy();
  await served?.close();
  served = undefined;
});

/** A device that counts the reads it serves. */
function countingDevice(size: number): { device: SparseMemoryDevice; reads: () => number } {
  const device = new SparseMemoryDevice(size);
  let reads = 0;
  const read = device.read.bind(device);
  device.read = (b, o) => {
    reads++;
    return read(b, o);
  };
  return { device, reads: () => reads };
}

/** Connects `n` clients that each pipeline `each` 1 MiB READs and never read a reply. */
async function slowReaders(port: number, n: number, each: number): Promise<void> {
  for (let c = 0; c < n; c++) {
    const p = await RawPeer.connect(port);
    peers.push(p);
    await go(p, 'disk');
    p.socket.pause();
    const batch: Buffer[] = [];
    for (let i = 0; i < each; i++) batch.push(request(K.CMD_READ, 0, BigInt(i), (i % 32) * MIB, MIB));
    p.send(...batch);
  }
}

/** Samples the server until `value` has not changed for a while; returns the largest sample of each watched figure. */
async function untilSettled(sample: () => number[], quietMs = 400): Promise<number[]> {
  const max = sample();
  let last = max[0];
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    await new Promise((r) => setTimeout(r, 10));
    const now = sample();
    now.forEach((v, i) => (max[i] = Math.max(max[i]!, v)));
    if (now[0] !== last) {
      last = now[0];
      since = Date.now();
    }
  }
  return max;
}

describe('clients that pipeline large reads and never read the replies', () => {
  it('hold the server at its buffer budget, each connection at its own bound, and the work done stays bounded', async () => {
    const { device, reads } = countingDevice(32 * MIB);
    served = await serveDevices([{ name: 'disk', device }], { maxBufferBytes: BUDGET, maxConnections: 32, maxConnectionsPerAddress: 0 });
    const server = served.server;
    const clients = 24;
    await slowReaders(served.port, clients, 100);
    const [, used, largest] = await untilSettled(() => [reads(), server.stats.budget.used, server.stats.largestConnection]);
    const { budget } = server.stats;
    expect(used).toBeLessThanOrEqual(BUDGET);
    expect(largest).toBeLessThanOrEqual(budget.perConnection);
    // The budget is spent: connections wait for room (backpressure), none was refused or cut off.
    expect(budget.sharedUsed).toBeGreaterThan(budget.shared - MIB - 512);
    expect(budget.waiting).toBeGreaterThan(0);
    expect(server.connectionCount).toBe(clients);
    // 2400 MiB were asked for. What was read is the budget plus what the kernel's socket buffers took off it.
    expect(reads()).toBeLessThan((clients * 100) / 4);
  });

  it('give every byte and every pooled buffer back once they close', async () => {
    const { device } = countingDevice(32 * MIB);
    let released = 0;
    served = await serveDevices([{ name: 'disk', device }], { maxBufferBytes: BUDGET, maxConnections: 32, maxConnectionsPerAddress: 0, releaseMemory: () => released++ });
    const server = served.server;
    await slowReaders(served.port, 12, 100);
    await untilSettled(() => [server.stats.budget.used]);
    expect(server.stats.buffers.slabBytes).toBeGreaterThan(0);
    for (const p of peers.splice(0)) p.destroy();
    await vi.waitFor(() => expect(server.connectionCount).toBe(0));
    await vi.waitFor(() => expect(server.stats.transmissions).toBe(0));
    const { budget, buffers } = server.stats;
    expect(budget.used).toBe(0);
    expect(budget.sharedUsed).toBe(0);
    expect(budget.waiting).toBe(0);
    expect(buffers).toEqual({ slabBytes: 0, slabs: 0, inUseBytes: 0 });
    expect(released).toBeGreaterThan(0);
  });

  it('keep a well-behaved client served while they sit at the budget', async () => {
    const { device } = countingDevice(32 * MIB);
    served = await serveDevices([{ name: 'disk', device }], { maxBufferBytes: BUDGET, maxConnections: 32, maxConnectionsPerAddress: 0 });
    const server = served.server;
    await slowReaders(served.port, 24, 100);
    await untilSettled(() => [server.stats.budget.used]);
    expect(server.stats.budget.waiting).toBeGreaterThan(0);
    const floor = server.stats.budget.floor;
    const c = await NbdClient.connect({ port: served.port, export: 'disk' });
    try {
      // Requests that fit this connection's floor run, pipelined, however full the shared part is.
      const size = 2 ** Math.floor(Math.log2(floor - 512));
      for (let round = 0; round < 8; round++) {
        const data = pattern(size, round);
        await c.write(data, round * size);
        const back = await Promise.all([c.read(round * size, size), c.read(round * size, 4096), c.read(round * size + 4096, 4096)]);
        expect(back[0].equals(data)).toBe(true);
        expect(back[1].equals(data.subarray(0, 4096))).toBe(true);
        expect(back[2].equals(data.subarray(4096, 8192))).toBe(true);
      }
      await c.flush();
      // A stream that cannot be framed is closed at once, not left waiting for the room its garbage asks for.
      const garbage = await RawPeer.connect(served.port);
      peers.push(garbage);
      await go(garbage, 'disk');
      const bad = request(K.CMD_READ, 0, 1n, 0, 32 * MIB);
      bad.writeUInt32BE(0xdeadbeef, 0);
      garbage.send(bad);
      await garbage.closedByServer();
      // All the while the slow ones still sat at the budget.
      expect(server.stats.budget.used).toBeLessThanOrEqual(BUDGET);
      expect(server.stats.budget.waiting).toBeGreaterThan(0);
    } finally {
      await c.disconnect();
    }
  }, 30_000);
});
