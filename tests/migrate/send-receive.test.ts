import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, convertToTemplate, createSnapshots, listSnapshots, listTemplates, revertSnapshot } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { sendChain } from '../../src/migrate/send.js';
import { receiveChain, ReceiveInterrupted } from '../../src/migrate/receive.js';
import { copyChain } from '../../src/migrate/chain-pipe.js';
import { ReceiveNote } from '../../src/migrate/receive-note.js';
import { abandonReceive } from '../../src/migrate/chain-ops.js';
import { chunked, Collect, contents, fill, write } from './chain-support.js';

const SIZE = 4 << 20;
let home: string;
let a: Pool;
let b: Pool;

beforeEach(async () => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-send-'));
  a = (await memoryPool()).pool;
  b = (await memoryPool()).pool;
});
afterEach(async () => {
  await a.close();
  await b.close();
  fs.rmSync(home, { recursive: true, force: true });
});

async function chainOf3(pool: Pool, volume = 'vm'): Promise<void> {
  await pool.createVolume(volume, SIZE);
  await write(pool, volume, 0, fill(128 << 10, 1));
  await createSnapshots(pool, [{ volume, snapshot: 's1' }]);
  await write(pool, volume, 1 << 20, fill(64 << 10, 2));
  await createSnapshots(pool, [{ volume, snapshot: 's2' }]);
  await write(pool, volume, 64 << 10, fill(4096, 3));
  await createSnapshots(pool, [{ volume, snapshot: 's3' }]);
  await write(pool, volume, 3 << 20, fill(4096, 4));
}

async function send(pool: Pool, req: { volume: string; to: string; from: string | null; resume?: string }): Promise<Buffer> {
  const out = new Collect();
  await sendChain(pool, 'a', req, out);
  return out.bytes();
}

const ctx = (): { poolName: string; home: string; checkpointBytes: number } => ({ poolName: 'b', home, checkpointBytes: 64 << 10 });

async function sameHistory(volume: string, into: string, snaps: string[]): Promise<void> {
  for (const s of snaps) expect((await contents(b, `${into}@${s}`)).equals(await contents(a, `${volume}@${s}`)), `@${s}`).toBe(true);
}

describe('send and receive', () => {
  it('carries the whole history of a snapshot, then the increments after it', async () => {
    await chainOf3(a);
    const full = await send(a, { volume: 'vm', to: 's2', from: null });
    const r = await receiveChain(b, ctx(), 'copy', chunked(full));
    expect(r.snapshots).toEqual(['s1', 's2']);
    expect(r.createdVolume).toBe(true);
    await sameHistory('vm', 'copy', ['s1', 's2']);
    const inc = await send(a, { volume: 'vm', to: 's3', from: 's2' });
    expect(inc.length).toBeLessThan(full.length);
    const r2 = await receiveChain(b, ctx(), 'copy', chunked(inc));
    expect(r2.snapshots).toEqual(['s3']);
    await sameHistory('vm', 'copy', ['s1', 's2', 's3']);
    expect((await contents(b, 'copy')).equals(await contents(a, 'vm@s3'))).toBe(true);
    expect((await b.check()).problems).toEqual([]);
  });

  it('refuses an incremental stream on the wrong base, and a whole stream over an existing volume', async () => {
    await chainOf3(a);
    await b.createVolume('copy', SIZE);
    await createSnapshots(b, [{ volume: 'copy', snapshot: 's2' }]);
    const inc = await send(a, { volume: 'vm', to: 's3', from: 's2' });
    await expect(receiveChain(b, ctx(), 'copy', chunked(inc))).rejects.toThrow(/does not apply to b\/copy: its snapshot @s2 is another snapshot/);
    const full = await send(a, { volume: 'vm', to: 's1', from: null });
    await expect(receiveChain(b, ctx(), 'copy', chunked(full))).rejects.toThrow(/b\/copy exists: a whole stream/);
    expect(new ReceiveNote(home, 'b').get('copy')).toBeUndefined();
    expect(await listSnapshots(b, 'copy')).toHaveLength(1);
  });

  it('resumes a stream cut at any offset with the token, and refuses bad tokens and other streams', async () => {
    await chainOf3(a);
    const full = await send(a, { volume: 'vm', to: 's3', from: null });
    // Cut inside the header, nothing was begun: no note, no token.
    await expect(receiveChain(b, ctx(), 'early', chunked(full.subarray(0, 40)))).rejects.toThrow(/truncated/);
    expect(new ReceiveNote(home, 'b').get('early')).toBeUndefined();
    for (const cut of [Math.floor(full.length / 50), Math.floor(full.length / 3), Math.floor(full.length * 0.8), full.length - 3]) {
      let token = '';
      try {
        await receiveChain(b, ctx(), `c${cut}`, chunked(full.subarray(0, cut), 4096));
        expect.unreachable('a cut stream must not be accepted');
      } catch (err) {
        expect(err).toBeInstanceOf(ReceiveInterrupted);
        token = (err as ReceiveInterrupted).token;
      }
      expect(new ReceiveNote(home, 'b').token(`c${cut}`)).toBe(token);
      // A whole stream of another snapshot is refused while this one is pending.
      const other = await send(a, { volume: 'vm', to: 's2', from: null });
      await expect(receiveChain(b, ctx(), `c${cut}`, chunked(other))).rejects.toThrow(/was interrupted: continue it with strata send --resume/);
      await expect(send(a, { volume: 'vm', to: 's3', from: null, resume: 'strata1-garbage' })).rejects.toThrow(/bad resume token/);
      await expect(send(a, { volume: 'vm', to: 's2', from: null, resume: token })).rejects.toThrow(/token is for vm@s3/);
      const rest = await send(a, { volume: 'vm', to: 's3', from: null, resume: token });
      // What the receiver holds durably is not sent again.
      if (cut > full.length / 2) expect(rest.length).toBeLessThan(full.length - cut / 2);
      const r = await receiveChain(b, ctx(), `c${cut}`, chunked(rest));
      expect(r.resumed).toBe(true);
      await sameHistory('vm', `c${cut}`, ['s1', 's2', 's3']);
      expect((await b.volumeInfo(`c${cut}`)).incomplete).toBeFalsy();
      expect(new ReceiveNote(home, 'b').get(`c${cut}`)).toBeUndefined();
    }
    expect((await b.check()).problems).toEqual([]);
  });

  it('copies the template two clones share once, and keeps them linked to it', async () => {
    await a.createVolume('base', SIZE);
    await write(a, 'base', 0, fill(2 << 20, 7));
    await convertToTemplate(a, 'base');
    for (const [i, name] of ['c1', 'c2'].entries()) {
      await cloneVolume(a, { template: 'base' }, name);
      await write(a, name, i * 65536, fill(65536, 10 + i));
      await createSnapshots(a, [{ volume: name, snapshot: 'now' }]);
    }
    const dst = { pool: b, poolName: 'b', home };
    const src = { pool: a, poolName: 'a', home };
    // A stream that leaves the origin out applies only where the origin is.
    const lean = new Collect();
    await sendChain(a, 'a', { volume: 'c1', to: 'now', from: null, omitBase: true }, lean);
    await expect(receiveChain(b, ctx(), 'c1', chunked(lean.bytes()))).rejects.toThrow(/leaves out the origin base of c1, and pool holds no template known to be it: send the stream whole/);
    expect(new ReceiveNote(home, 'b').get('c1')).toBeUndefined();
    const r1 = await copyChain(src, dst, { volume: 'c1', to: 'now', newName: 'c1' });
    const used1 = (await b.listVolumes()).length;
    expect(r1.origin).toEqual({ template: 'base', reused: false });
    const before = await b.layerAllocated(b.layerById(b.catalogNow.templates[0]!.layer));
    const r2 = await copyChain(src, dst, { volume: 'c2', to: 'now', newName: 'c2' });
    expect(r2.origin).toEqual({ template: 'base', reused: true });
    // The second stream left the template out: it carried the clone's own 64 KiB, not the template's 2 MiB.
    expect(r2.streamBytes).toBeLessThan(256 << 10);
    expect(r1.streamBytes).toBeGreaterThan(2 << 20);
    expect((await listTemplates(b)).map((t) => [t.name, t.dependants.sort()])).toEqual([['base', ['c1', 'c1@now', 'c2', 'c2@now']]]);
    expect(await b.layerAllocated(b.layerById(b.catalogNow.templates[0]!.layer))).toBe(before);
    expect((await b.listVolumes()).length).toBe(used1 + 1);
    for (const n of ['c1', 'c2']) expect((await contents(b, `${n}@now`)).equals(await contents(a, `${n}@now`))).toBe(true);
    expect((await b.check()).problems).toEqual([]);
  });

  it('a pool that fills part-way gives a token; abandoning the receive leaves the pool as before', async () => {
    const small = (await memoryPool({ deviceSize: 6 << 20 })).pool;
    try {
      await a.createVolume('big', 8 << 20);
      await write(a, 'big', 0, Buffer.alloc(8 << 20, 9));
      await createSnapshots(a, [{ volume: 'big', snapshot: 'x' }]);
      const stream = await send(a, { volume: 'big', to: 'x', from: null });
      const err = await receiveChain(small, { poolName: 'small', home }, 'big', chunked(stream)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ReceiveInterrupted);
      expect((err as Error).message).toMatch(/receive into small\/big stopped: .*(space|ENOSPC|full)/i);
      expect(new ReceiveNote(home, 'small').token('big')).toBe((err as ReceiveInterrupted).token);
      expect(await abandonReceive(small, home, 'small', 'big')).toEqual({ removed: ['big'] });
      expect(await small.listVolumes()).toEqual([]);
      expect(new ReceiveNote(home, 'small').get('big')).toBeUndefined();
      expect((await small.check()).problems).toEqual([]);
    } finally {
      await small.close();
    }
  });

  it('a cancelled copy stops both sides; abandoning it removes the target and the base template it made', async () => {
    await a.createVolume('base', SIZE);
    await write(a, 'base', 0, fill(SIZE, 5));
    await convertToTemplate(a, 'base');
    await cloneVolume(a, { template: 'base' }, 'c');
    await write(a, 'c', 0, fill(1 << 20, 6));
    await createSnapshots(a, [{ volume: 'c', snapshot: 'now' }]);
    const ac = new AbortController();
    const copying = copyChain({ pool: a, poolName: 'a', home }, { pool: b, poolName: 'b', home }, { volume: 'c', to: 'now', newName: 'c' }, {
      signal: ac.signal,
      onProgress: (done) => {
        if (done > SIZE + (256 << 10)) ac.abort();
      },
    });
    await expect(copying).rejects.toThrow();
    expect(new ReceiveNote(home, 'b').get('c')).toBeDefined();
    const { removed } = await abandonReceive(b, home, 'b', 'c');
    // The sender runs ahead of the receiver by the pipe's buffer: the clone may or may not have been made yet.
    expect(removed).toContain('base');
    expect(await b.listVolumes()).toEqual([]);
    expect(await listTemplates(b)).toEqual([]);
    expect((await b.check()).problems).toEqual([]);
    // The source is as it was.
    expect((await contents(a, 'c@now')).subarray(0, 1 << 20).equals(fill(1 << 20, 6))).toBe(true);
  });

  it("a clone of another volume's snapshot arrives over a template of that snapshot; only the history of the snapshot sent goes", async () => {
    await chainOf3(a);
    await cloneVolume(a, { volume: 'vm', snapshot: 's2' }, 'kid');
    await write(a, 'kid', 0, fill(4096, 0x77));
    await createSnapshots(a, [{ volume: 'kid', snapshot: 'k1' }]);
    // A revert puts k2 on a branch that k3's history does not hold.
    await write(a, 'kid', 8192, fill(4096, 0x78));
    await createSnapshots(a, [{ volume: 'kid', snapshot: 'k2' }]);
    await revertSnapshot(a, { volume: 'kid', snapshot: 'k1' });
    await write(a, 'kid', 16384, fill(4096, 0x79));
    await createSnapshots(a, [{ volume: 'kid', snapshot: 'k3' }]);
    const r = await receiveChain(b, ctx(), 'kid', chunked(await send(a, { volume: 'kid', to: 'k3', from: null })));
    expect(r.origin).toEqual({ template: 'vm-s2', reused: false });
    expect(r.snapshots).toEqual(['k1', 'k3']);
    for (const s of ['k1', 'k3']) expect((await contents(b, `kid@${s}`)).equals(await contents(a, `kid@${s}`)), s).toBe(true);
    expect((await contents(b, 'vm-s2', true)).equals(await contents(a, 'vm@s2'))).toBe(true);
    expect((await b.check()).problems).toEqual([]);
  });
});
