import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Pool } from '../../src/qcowlike/index.js';
import { memoryPool } from '../support/pool.js';
import { Collect } from '../support/volume-bytes.js';
import { createSnapshots, revertSnapshot } from '../../src/snapshot/index.js';
import { calls } from '../support/fake-chains.js';
import { exportDiff } from '../../src/host/diff-export.js';
import { importDiff } from '../../src/host/diff-import.js';
import { DiffImports } from '../../src/host/diff-imports.js';
import { runDiff } from '../../src/host/diff-admin.js';
import { ControlServer } from '../../src/host/control-server.js';
import { ControlClient } from '../../src/host/control-client.js';
import { diffViaServer } from '../../src/host/diff-transfer.js';
import type { ExportDiffResult } from '../../src/host/diff-export.js';
import type { ImportDiffResult } from '../../src/host/diff-import.js';

/**
 * export-diff and import-diff through the host layer, run twice: over the
 * pool's chain operations, and over a byte-copy stand-in with the same
 * signatures (tests/support/fake-chains.ts) that can also fail on purpose.
 */

const SIZE = 1 << 20;

let home: string;

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  // In pieces that do not line up with records, as a pipe gives them.
  for (let at = 0; at < b.length; at += 3001) yield b.subarray(at, at + 3001);
}

export async function bytesOf(pool: Pool, volume: string): Promise<Buffer> {
  const v = await pool.openVolume(volume, { readOnly: true });
  const b = Buffer.alloc(v.size);
  await v.read(b, 0);
  await v.close();
  return b;
}

async function write(pool: Pool, volume: string, offset: number, data: Buffer): Promise<void> {
  const v = await pool.openVolume(volume);
  await v.write(data, offset);
  await v.flush();
  await v.close();
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** A source pool with v@s1 and v@s2, and the bytes of each. */
async function source(): Promise<{ pool: Pool; s1: Buffer; s2: Buffer }> {
  const { pool } = await memoryPool();
  await pool.createVolume('v', SIZE);
  await write(pool, 'v', 0, pattern(200_000, 1));
  await write(pool, 'v', 700_000, pattern(50_000, 2));
  await createSnapshots(pool, [{ volume: 'v', snapshot: 's1' }]);
  const s1 = await bytesOf(pool, 'v');
  await write(pool, 'v', 100_000, pattern(30_000, 3));
  const z = await pool.openVolume('v');
  await z.writeZeroes(704_512, 16_384);
  await z.close();
  await createSnapshots(pool, [{ volume: 'v', snapshot: 's2' }]);
  const s2 = await bytesOf(pool, 'v');
  return { pool, s1, s2 };
}

async function exported(pool: Pool, from: string | null, to: string): Promise<Buffer> {
  const out = new Collect();
  await exportDiff(pool, 'src', { volume: 'v', from, to }, out);
  return out.bytes();
}

export function diffScenarios(over: 'chains' | 'stand-in'): void {
describe(`export-diff and import-diff (host layer, over ${over === 'chains' ? "the pool's chain operations" : 'a byte-copy stand-in'})`, () => {
  beforeEach(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-diff-'));
  });
  afterEach(() => {
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('a full stream and then an incremental rebuild both snapshots, each applied in the right place', async () => {
    const { pool, s1, s2 } = await source();
    const full = await exported(pool, null, 's1');
    const incr = await exported(pool, 's1', 's2');
    // Only what changed travels: the incremental is far smaller than the full stream.
    expect(incr.length).toBeLessThan(full.length / 3);
    const { pool: dst } = await memoryPool();
    const ctx = { poolName: 'dst', home };
    const a = await importDiff(dst, ctx, 'w', once(full));
    expect(a).toMatchObject({ createdVolume: true, resumed: false, from: null, size: SIZE });
    expect((await bytesOf(dst, 'w')).equals(s1)).toBe(true);
    expect((await dst.volumeInfo('w')).incomplete).toBe(false);
    const b = await importDiff(dst, ctx, 'w', once(incr));
    expect(b.snapshot.name).toBe('s2');
    expect(b.zeroBytes).toBeGreaterThan(0);
    expect((await bytesOf(dst, 'w')).equals(s2)).toBe(true);
    // The local snapshots have UUIDs of their own, and the note maps them to the source's.
    const note = new DiffImports(home, 'dst');
    expect(note.sameAs(b.to.uuid).has(b.snapshot.uuid)).toBe(true);
    expect(b.snapshot.uuid).not.toBe(b.to.uuid);
    expect(note.pending('w')).toBeUndefined();
    // And the same stream once more is refused: the volume is there already.
    await expect(importDiff(dst, ctx, 'w', once(incr))).rejects.toThrow(/holds this stream's end point already, as @s2/);
  });

  it('a stream taken from the backup applies back to the original: imported snapshots and their sources are one', async () => {
    const { pool } = await source();
    const { pool: dst } = await memoryPool();
    await importDiff(dst, { poolName: 'dst', home }, 'w', once(await exported(pool, null, 's1')));
    await importDiff(dst, { poolName: 'dst', home }, 'w', once(await exported(pool, 's1', 's2')));
    // The backup moves on by itself, and its change goes back to the original, whose s2 is the backup's s2.
    await write(dst, 'w', 300_000, pattern(10_000, 4));
    await createSnapshots(dst, [{ volume: 'w', snapshot: 's3' }]);
    const s3 = await bytesOf(dst, 'w');
    const back = new Collect();
    await exportDiff(dst, 'dst', { volume: 'w', from: 's2', to: 's3' }, back);
    const r = await importDiff(pool, { poolName: 'src', home }, 'v', once(back.bytes()));
    expect(r.snapshot.name).toBe('s3');
    expect((await bytesOf(pool, 'v')).equals(s3)).toBe(true);
  });

  it('refuses a stream whose base the volume does not stand at', async () => {
    const { pool } = await source();
    const full = await exported(pool, null, 's1');
    const incr = await exported(pool, 's1', 's2');
    const { pool: dst } = await memoryPool();
    const ctx = { poolName: 'dst', home };
    await expect(importDiff(dst, ctx, 'w', once(incr))).rejects.toThrow(/volume 'w' not found in pool 'dst'/);
    await importDiff(dst, ctx, 'w', once(full));
    await write(dst, 'w', 4096, Buffer.alloc(512, 9));
    await expect(importDiff(dst, ctx, 'w', once(incr))).rejects.toThrow(/written since @s1, the stream's base/);
    // A snapshot of the same name is not the base: UUIDs decide.
    await dst.createVolume('x', SIZE);
    await createSnapshots(dst, [{ volume: 'x', snapshot: 's1' }]);
    await expect(importDiff(dst, ctx, 'x', once(incr))).rejects.toThrow(/its snapshot @s1 is another snapshot/);
    // A full stream wants an empty volume.
    await expect(importDiff(dst, ctx, 'x', once(full))).rejects.toThrow(/exists and is not empty/);
    await expect(importDiff(dst, ctx, 'w', once(full))).rejects.toThrow(/holds this stream's end point already, as @s1/);
    // Back at the base, the stream applies.
    await revertSnapshot(dst, { volume: 'w', snapshot: 's1' });
    await importDiff(dst, ctx, 'w', once(incr));
  });

  it('an import cut short by a truncated stream is finished by running the whole stream again, and blocks any other', async () => {
    const { pool, s1, s2 } = await source();
    const full = await exported(pool, null, 's1');
    const incr = await exported(pool, 's1', 's2');
    const { pool: dst } = await memoryPool();
    const ctx = { poolName: 'dst', home };
    await expect(importDiff(dst, ctx, 'w', once(full.subarray(0, Math.floor(full.length / 2))))).rejects.toThrow(/truncated/);
    // Half a full stream: the volume is there, marked incomplete.
    expect((await dst.volumeInfo('w')).incomplete).toBe(true);
    expect((await importDiff(dst, ctx, 'w', once(full))).resumed).toBe(true);
    expect((await bytesOf(dst, 'w')).equals(s1)).toBe(true);
    await expect(importDiff(dst, ctx, 'w', once(incr.subarray(0, incr.length - 10)))).rejects.toThrow(/truncated/);
    expect(new DiffImports(home, 'dst').pending('w')).toMatchObject({ phase: 'applying', to: { name: 's2' } });
    // Another stream while that one is pending: refused, naming the one to finish.
    const other = await exported(pool, null, 's2');
    await expect(importDiff(dst, ctx, 'w', once(other))).rejects.toThrow(/was cut short: run it again with that stream/);
    const done = await importDiff(dst, ctx, 'w', once(incr));
    expect(done.resumed).toBe(true);
    expect((await bytesOf(dst, 'w')).equals(s2)).toBe(true);
    // Cut short again elsewhere, then reverted to its base: the note is stale and goes.
    await importDiff(dst, ctx, 'x', once(full));
    await expect(importDiff(dst, ctx, 'x', once(incr.subarray(0, incr.length - 10)))).rejects.toThrow(/truncated/);
    await revertSnapshot(dst, { volume: 'x', snapshot: 's1' });
    const other2 = await exported(pool, 's2', 's1');
    await expect(importDiff(dst, ctx, 'x', once(other2))).rejects.toThrow(/dst\/x holds this stream's end point already, as @s1/);
    expect(new DiffImports(home, 'dst').pending('x')).toBeUndefined();
  });

  it('a long import notes how far it got, and its re-run writes only from there', async () => {
    const { pool, s1 } = await source();
    const full = await exported(pool, null, 's1');
    const { pool: dst } = await memoryPool();
    const ctx = { poolName: 'dst', home, checkpointBytes: 16 * 1024 };
    await expect(importDiff(dst, ctx, 'w', once(full.subarray(0, Math.floor(full.length * 0.9))))).rejects.toThrow(/truncated/);
    const through = new DiffImports(home, 'dst').pending('w')?.appliedThrough ?? 0;
    expect(through).toBeGreaterThan(100_000);
    const again = await importDiff(dst, ctx, 'w', once(full));
    expect(again).toMatchObject({ resumed: true, skippedThrough: through });
    expect((await bytesOf(dst, 'w')).equals(s1)).toBe(true);
  });

  if (over !== 'chains') it('an import stopped while making its snapshot is finished by the re-run', async () => {
    const { pool, s1 } = await source();
    const full = await exported(pool, null, 's1');
    const { pool: dst } = await memoryPool();
    const ctx = { poolName: 'dst', home };
    calls.failNextCreate = true;
    await expect(importDiff(dst, ctx, 'w', once(full))).rejects.toThrow(/power lost/);
    expect(new DiffImports(home, 'dst').pending('w')?.phase).toBe('snapshotting');
    const again = await importDiff(dst, ctx, 'w', once(full));
    expect(again.resumed).toBe(true);
    expect((await bytesOf(dst, 'w')).equals(s1)).toBe(true);
  });

  it('an export whose reader goes away fails instead of waiting for it', async () => {
    const { pool } = await source();
    const out: Writable = new Writable({
      highWaterMark: 1,
      write(_c, _e, cb): void {
        setImmediate(() => {
          out.destroy();
          cb();
        });
      },
    });
    out.on('error', () => undefined);
    await expect(exportDiff(pool, 'src', { volume: 'v', from: null, to: 's2' }, out)).rejects.toThrow(/closed before the export ended/);
  });

  it('diff lists data and zero ranges between snapshots and to now', async () => {
    const { pool } = await source();
    const ranges = await runDiff(pool, 'src', { op: 'diff', volume: 'v', from: 's1', to: 's2' });
    expect(ranges.some((r) => r.offset <= 704_512 && r.offset + r.length >= 720_896)).toBe(true);
    expect(ranges.some((r) => r.kind === 'data' && r.offset <= 100_000)).toBe(true);
    expect(await runDiff(pool, 'src', { op: 'diff', volume: 'v', from: 's2', to: null })).toEqual([]);
    await expect(runDiff(pool, 'src', { op: 'diff', volume: 'v', from: 'nope', to: null })).rejects.toThrow(/snapshot 'src\/v@nope' not found/);
  });

  it('through a server: the stream goes over the command\'s own socket both ways, and the server\'s refusal is what the command reports', async () => {
    const { pool, s2 } = await source();
    const { pool: dst } = await memoryPool();
    const log = (): void => undefined;
    const servers = await Promise.all([
      ControlServer.start({ home, pool: 'src', opened: pool, admin: {}, rebuildRate: 0, readOnly: false, direct: false, log }),
      ControlServer.start({ home, pool: 'dst', opened: dst, admin: {}, rebuildRate: 0, readOnly: false, direct: false, log }),
    ]);
    try {
      const from = (await ControlClient.connect(home, 'src'))!;
      const to = (await ControlClient.connect(home, 'dst'))!;
      const got = new Collect();
      const out = await diffViaServer<ExportDiffResult>(from, { op: 'export-diff', volume: 'v', from: null, to: 's2' }, async (sock) => {
        for await (const b of sock) got.write(b);
      });
      expect(got.bytes().length).toBe(out.streamBytes);
      const stream = got.bytes();
      const imported = await diffViaServer<ImportDiffResult>(to, { op: 'import-diff', volume: 'w' }, async (sock) => {
        sock.end(stream);
      });
      expect(imported).toMatchObject({ createdVolume: true, snapshot: { name: 's2' } });
      expect((await bytesOf(dst, 'w')).equals(s2)).toBe(true);
      // Refused by the server before it read much: the reason comes back, not a broken pipe.
      await expect(diffViaServer(to, { op: 'import-diff', volume: 'w' }, async (sock) => void sock.end(stream))).rejects.toThrow(/holds this stream's end point already/);
      await expect(diffViaServer(from, { op: 'export-diff', volume: 'v', from: null, to: 'nope' }, async () => undefined)).rejects.toThrow(/snapshot 'src\/v@nope' not found/);
      from.close();
      to.close();
    } finally {
      for (const s of servers) await s?.close();
    }
  });
});
}
