import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../support/scratch.js';
import { startServe } from './support.js';

const scratch = scratchDir('main-job');
afterAll(() => scratch.cleanup());

describe('the main job: `strata serve` on a fresh home', () => {
  it('creates a default pool with a thin volume, serves it, and prints how QEMU attaches it', async () => {
    const home = path.join(scratch.dir, 'home');
    const s = await startServe(['--home', home, '--listen', '127.0.0.1:0']);
    try {
      const uri = s.lines.find((l) => l.startsWith('nbd://'))!;
      expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/vm1$/);
      expect(s.lines.find((l) => l.startsWith('qemu-system-x86_64'))).toMatch(/-drive file=nbd:\/\/127\.0\.0\.1:\d+\/vm1,format=raw,if=virtio/);
      const info = execFileSync('nbdinfo', ['--json', uri], { encoding: 'utf8' });
      expect(JSON.parse(info).exports[0]['export-size']).toBe(20 * 2 ** 30);
      // Thin: the 100G pool file holds its 64M journal and almost nothing else.
      expect(fs.statSync(path.join(home, 'pool0.pool')).blocks * 512).toBeLessThan(72 << 20);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    // A second start serves what is there instead of creating anything.
    const again = await startServe(['--home', home, '--listen', '127.0.0.1:0']);
    try {
      expect(again.lines.find((l) => l.startsWith('nbd://'))).toMatch(/\/vm1$/);
    } finally {
      await again.stop();
    }
  });
});
