import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminError } from '../../src/host/admin.js';
import { releaseFrozenExport } from '../../src/host/export-clients.js';
import type { FrozenCatalog, FrozenEntry } from '../../src/host/frozen-exports.js';
import { PoolExportSource } from '../../src/host/pool-exports.js';
import * as K from '../../src/nbd/constants.js';
import { NbdClient, NbdServer } from '../../src/nbd/index.js';
import type { Pool, Volume } from '../../src/qcowlike/index.js';
import { memoryPool } from '../support/pool.js';
import { hasTool, nbdsh, RawPeer, READ_ONLY_PROBE, tool } from './support.js';
import { go, goData, greet, option, optReply, request, structuredReply } from './wire.js';

const MiB = 1024 * 1024;
const run = promisify(execFile);

/**
 * Snapshots and templates as a catalog that a test edits: each frozen export
 * reads volume `base` of the pool read-only, and reports what `base` holds
 * as coming from two layers down (depth 2), the rest unallocated.
 */
class FakeCatalog implements FrozenCatalog {
  entries: FrozenEntry[] = [];
  opened = 0;
  list(): FrozenEntry[] {
    return [...this.entries];
  }
  async open(pool: Pool): Promise<Volume> {
    this.opened++;
    const v = await pool.openVolume('base', { readOnly: true });
    return Object.assign(v, {
      allocationDepth: async (offset: number, length: number) => (await v.blockStatus(offset, length)).map((e) => ({ offset: e.offset, length: e.length, depth: e.hole ? 0 : 2 })),
    });
  }
}

let pool: Pool;
const catalog = new FakeCatalog();
let server: NbdServer;
let source: PoolExportSource;
let port = 0;
const uri = (name: string): string => `nbd://127.0.0.1:${port}/${name}`;

beforeAll(async () => {
  ({ pool } = await memoryPool({ deviceSize: 64 * MiB }));
  await pool.createVolume('vm1', 8 * MiB);
  await pool.createVolume('base', 8 * MiB);
  const base = await pool.openVolume('base');
  await base.write(Buffer.alloc(MiB, 0x5a), 2 * MiB);
  await base.close();
  catalog.entries = [
    { kind: 'snapshot', volume: 'vm1', snapshot: 's1', uuid: 'u-s1', size: 8 * MiB },
    { kind: 'template', template: 'tmpl', uuid: 'u-tmpl', size: 8 * MiB },
  ];
  source = new PoolExportSource([{ name: 'p0', pool }], { readOnly: false, allowIncomplete: false, describe: (p, v, size) => `volume ${p}/${v}, ${size}`, frozen: catalog });
  server = new NbdServer({ source });
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  port = 'port' in bound ? bound.port : 0;
});

afterAll(async () => {
  await server.close();
  await pool.close();
});

describe('snapshot and template exports of a served pool', () => {
  it('lists every volume, then every snapshot as VOL@SNAP and every template by name, described as read-only', async () => {
    const list = await NbdClient.list({ port });
    expect(list.map((e) => e.name)).toEqual(['vm1', 'base', 'vm1@s1', 'tmpl']);
    expect(list.find((e) => e.name === 'vm1@s1')?.description).toBe('snapshot p0/vm1@s1, 8M, read-only');
    expect(list.find((e) => e.name === 'tmpl')?.description).toBe('template p0/tmpl, 8M, read-only');
  });

  it('announces them read-only, refuses WRITE, TRIM and WRITE_ZEROES with EPERM and keeps the connection', async () => {
    for (const name of ['vm1@s1', 'tmpl', 'p0/vm1@s1']) {
      const peer = await RawPeer.connect(port);
      try {
        const { size, flags } = await go(peer, name, { structured: true });
        expect(size).toBe(8 * MiB);
        expect(flags & K.FLAG_READ_ONLY).toBe(K.FLAG_READ_ONLY);
        expect(flags & (K.FLAG_SEND_TRIM | K.FLAG_SEND_WRITE_ZEROES)).toBe(0);
        peer.send(request(K.CMD_WRITE, 0, 1n, 0, 4096), Buffer.alloc(4096, 1));
        peer.send(request(K.CMD_TRIM, 0, 2n, 0, 4096));
        peer.send(request(K.CMD_WRITE_ZEROES, 0, 3n, 0, 4096));
        const errors = new Map<bigint, number>();
        for (let i = 0; i < 3; i++) {
          const [c] = await structuredReply(peer);
          expect(c!.type).toBe(K.REPLY_TYPE_ERROR);
          errors.set(c!.cookie, c!.payload.readUInt32BE(0));
        }
        expect([...errors].sort()).toEqual([
          [1n, K.NBD_EPERM],
          [2n, K.NBD_EPERM],
          [3n, K.NBD_EPERM],
        ]);
        // Still up: a read of the frozen data works.
        peer.send(request(K.CMD_READ, K.CMD_FLAG_DF, 4n, 2 * MiB, 4096));
        const [data] = await structuredReply(peer);
        expect(data!.type).toBe(K.REPLY_TYPE_OFFSET_DATA);
        expect(data!.payload.subarray(8).every((b) => b === 0x5a)).toBe(true);
      } finally {
        peer.destroy();
      }
    }
    // The data the refused writes carried went nowhere.
    const base = await pool.openVolume('base', { readOnly: true });
    const head = Buffer.alloc(4096);
    await base.read(head, 0);
    await base.close();
    expect(head.every((b) => b === 0)).toBe(true);
  });

  it('appear and go as the catalog changes; a name a volume holds stays the volume', async () => {
    catalog.entries.push({ kind: 'snapshot', volume: 'vm1', snapshot: 's2', uuid: 'u-s2', size: 8 * MiB }, { kind: 'template', template: 'vm1', uuid: 'u-t', size: 8 * MiB });
    expect((await NbdClient.list({ port })).map((e) => e.name)).toEqual(['vm1', 'base', 'vm1@s1', 'tmpl', 'vm1@s2']);
    const c = await NbdClient.connect({ port, export: 'vm1' });
    await c.write(Buffer.alloc(512, 7), 0);
    await c.disconnect();
    catalog.entries = catalog.entries.filter((e) => !(e.kind === 'snapshot' && e.snapshot === 's1'));
    expect((await NbdClient.list({ port })).map((e) => e.name)).toEqual(['vm1', 'base', 'tmpl', 'vm1@s2']);
    const peer = await RawPeer.connect(port);
    await greet(peer);
    peer.send(option(K.OPT_GO, goData('vm1@s1')));
    expect((await optReply(peer)).type).toBe(K.REP_ERR_UNKNOWN);
    peer.destroy();
    catalog.entries = [
      { kind: 'snapshot', volume: 'vm1', snapshot: 's1', uuid: 'u-s1', size: 8 * MiB },
      { kind: 'template', template: 'tmpl', uuid: 'u-tmpl', size: 8 * MiB },
    ];
  });

  it('a name made again for another snapshot is opened afresh for new clients; the connected one keeps its own', async () => {
    const before = catalog.opened;
    const first = await NbdClient.connect({ port, export: 'vm1@s1' });
    const again = await NbdClient.connect({ port, export: 'vm1@s1' });
    expect(catalog.opened).toBe(before + 1);
    catalog.entries[0] = { kind: 'snapshot', volume: 'vm1', snapshot: 's1', uuid: 'u-s1-new', size: 8 * MiB };
    const later = await NbdClient.connect({ port, export: 'vm1@s1' });
    expect(catalog.opened).toBe(before + 2);
    expect(server.openExports).toBe(2);
    // Both openings count as the export's clients.
    expect(server.clientsOf('vm1@s1')).toBe(3);
    for (const c of [first, again, later]) {
      expect((await c.read(2 * MiB, 512)).every((b) => b === 0x5a)).toBe(true);
      await c.disconnect();
    }
    for (let i = 0; i < 100 && server.openExports > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(server.openExports).toBe(0);
    catalog.entries[0] = { kind: 'snapshot', volume: 'vm1', snapshot: 's1', uuid: 'u-s1', size: 8 * MiB };
  });

  it('names them POOL/VOL@SNAP and POOL/TMPL when several pools are served', async () => {
    const { pool: other } = await memoryPool({ deviceSize: 32 * MiB });
    await other.createVolume('data', 4 * MiB);
    const several = new PoolExportSource(
      [
        { name: 'p0', pool },
        { name: 'p1', pool: other },
      ],
      { readOnly: false, allowIncomplete: false, describe: () => '', frozen: catalog },
    );
    expect((await several.list()).map((e) => e.name)).toEqual(['p0/vm1', 'p0/base', 'p1/data', 'p0/vm1@s1', 'p0/tmpl', 'p1/vm1@s1', 'p1/tmpl']);
    expect(await several.resolve('vm1@s1')).toBeUndefined();
    await other.close();
  });

  it('a delete is refused while a client reads the export, naming it; forced, the client is ended first', async () => {
    const ctx = { poolName: 'p0', clientsOf: (key: string) => server.clientsOf(source.exportName('p0', key)), disconnect: (key: string) => server.disconnect(source.exportName('p0', key)) };
    expect(await releaseFrozenExport(ctx, 'vm1@s1', 'snapshot', false)).toBe(0);
    const reader = await NbdClient.connect({ port, export: 'vm1@s1' });
    await reader.read(0, 4096);
    const refused = releaseFrozenExport(ctx, 'vm1@s1', 'snapshot', false);
    await expect(refused).rejects.toBeInstanceOf(AdminError);
    await expect(refused).rejects.toThrow("snapshot 'p0/vm1@s1' is exported and read by 1 connected client; disconnect it first, or force the delete to end its connection");
    expect(await releaseFrozenExport(ctx, 'vm1@s1', 'snapshot', true)).toBe(1);
    expect(server.clientsOf('vm1@s1')).toBe(0);
    await expect(reader.read(0, 4096)).rejects.toThrow();
    reader.destroy();
  });
});

describe('real clients on a frozen export', () => {
  it.skipIf(!hasTool('nbdinfo'))('nbdinfo --map=qemu:allocation-depth shows the layer each range comes from; --map shows base:allocation; --list names both contexts', async () => {
    const depth = JSON.parse(await tool('nbdinfo', ['--json', '--map=qemu:allocation-depth', uri('vm1@s1')])) as Array<{ offset: number; length: number; type: number; description: string }>;
    expect(depth.map((e) => [e.offset, e.length, e.type])).toEqual([
      [0, 2 * MiB, 0],
      [2 * MiB, MiB, 2],
      [3 * MiB, 5 * MiB, 0],
    ]);
    expect(depth[1]!.description).toBe('backing depth 2');
    const alloc = JSON.parse(await tool('nbdinfo', ['--json', '--map', uri('tmpl')])) as Array<{ offset: number; length: number; type: number }>;
    expect(alloc.map((e) => [e.offset, e.length, e.type])).toEqual([
      [0, 2 * MiB, K.STATE_HOLE | K.STATE_ZERO],
      [2 * MiB, MiB, 0],
      [3 * MiB, 5 * MiB, K.STATE_HOLE | K.STATE_ZERO],
    ]);
    const info = await tool('nbdinfo', [uri('vm1@s1')]);
    expect(info).toMatch(/base:allocation\s+qemu:allocation-depth/);
    expect(info).toMatch(/is_read_only: true/);
  });

  it.skipIf(!hasTool('qemu-img'))('qemu-img map sees the data and the holes; qemu-io cannot open it for writing', async () => {
    const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', '-f', 'raw', uri('vm1@s1')])) as Array<{ start: number; length: number; data: boolean }>;
    expect(map.filter((e) => e.data).map((e) => [e.start, e.length])).toEqual([[2 * MiB, MiB]]);
    await expect(tool('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', uri('vm1@s1')])).rejects.toThrow(/Permission denied|Operation not permitted|read-only/);
  });

  it.skipIf(!hasTool('nbdsh'))('nbdsh, its client checks off, gets EPERM for a write, a trim and a write-zeroes, and reads on', async () => {
    const out = await nbdsh(uri('tmpl'), READ_ONLY_PROBE);
    expect(out.trim().split('\n')).toEqual(['write EPERM', 'trim EPERM', 'zero EPERM', 'read 4096 90']);
  });

  it.skipIf(!hasTool('nbd-tester-client'))("the NBD project's test client: its read-only test (writes must fail) and its read test pass; its write test fails", async () => {
    const env = { ...process.env, NBD_TEST_SILENT: '1' };
    const tester = (args: string[]) => run('nbd-tester-client', ['-N', 'vm1@s1', ...args, '127.0.0.1', String(port)], { env, timeout: 60_000 });
    await tester(['-w', '-F']);
    await tester([]);
    // The same client without -F expects its writes to succeed: it reports the server's EPERM.
    await expect(tester(['-w'])).rejects.toThrow(/Received error from server: 1 /);
  });
});
