import { describe, expect, it } from 'vitest';
import { MemoryDevice, PassThroughDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';

/** A device whose flushes can be held back, to see who waits for a commit. */
class HeldFlushes extends PassThroughDevice {
  held = false;
  started = 0;
  private waiting: Array<() => void> = [];
  override async flush(): Promise<void> {
    this.started++;
    if (this.held) await new Promise<void>((r) => this.waiting.push(r));
    return super.flush();
  }
  release(): void {
    this.held = false;
    for (const r of this.waiting.splice(0)) r();
  }
  override async close(): Promise<void> {}
}

/** Settles within a few turns of the event loop, or reports that it is still waiting. */
async function settlesSoon(p: Promise<void>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  for (let i = 0; i < 50 && !done; i++) await new Promise((r) => setImmediate(r));
  return done;
}

describe('commits for journal pressure', () => {
  it('start in the background and are waited for only at the bounds; every byte stays', async () => {
    const dev = new HeldFlushes(new MemoryDevice({ size: 320 << 20 }));
    const pool = await Pool.create(dev, { clusterSize: 65536, journalBytes: 256 * 1024 });
    const vol = await pool.openVolume((await pool.createVolume('v', 256 << 20)).name);
    dev.held = true;
    const before = dev.started;
    const data = (i: number) => Buffer.alloc(4096, (i % 250) + 1);
    // Each write allocates a cluster: map and bitmap deltas fill the journal a little at a time.
    let i = 0;
    let startedAt = -1;
    let wentOnWhileHeld = 0;
    let blocked: Promise<void> | undefined;
    for (; i < 4096; i++) {
      const w = vol.write(data(i), i * 65536);
      if (!(await settlesSoon(w))) {
        blocked = w;
        break;
      }
      if (dev.started > before && startedAt < 0) startedAt = i;
      else if (startedAt >= 0) wentOnWhileHeld++;
    }
    // A commit began (its flush is held) and writes went on past it without waiting...
    expect(startedAt).toBeGreaterThanOrEqual(0);
    expect(wentOnWhileHeld).toBeGreaterThan(0);
    // ...until the bound, where a write waits for the commit.
    expect(blocked).toBeDefined();
    dev.release();
    await blocked;
    await vol.flush();
    await vol.close();
    await pool.close();
    const again = await Pool.open(dev);
    const back = await again.openVolume('v');
    const buf = Buffer.alloc(4096);
    for (let k = 0; k <= i; k++) {
      await back.read(buf, k * 65536);
      expect(buf.equals(data(k))).toBe(true);
    }
    await back.close();
    await again.close();
  });
});
