import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { NbdClient } from '../../src/nbd/index.js';
import { NBD_EIO, NBD_EINVAL } from '../../src/nbd/constants.js';
import { FaultyDevice } from '../../src/blockdev/index.js';
import { serveDevices } from './support.js';

/** A device that counts the bytes read from it. */
class CountingDevice extends MemoryDevice {
  bytesRead = 0;
  override async read(buf: Uint8Array, offset: number): Promise<void> {
    this.bytesRead += buf.length;
    return super.read(buf, offset);
  }
}

describe('NBD_CMD_CACHE', () => {
  it('reads the range through (in pieces) so the layers below hold it warm', async () => {
    const dev = new CountingDevice({ size: 8 << 20 });
    const s = await serveDevices([{ name: 'c', device: dev }]);
    const c = await NbdClient.connect({ port: s.port, export: 'c' });
    try {
      await c.cache(1 << 20, 3 * (1 << 20) + 5);
      expect(dev.bytesRead).toBe(3 * (1 << 20) + 5);
      await c.cache(0, 0);
      expect(dev.bytesRead).toBe(3 * (1 << 20) + 5);
      await expect(c.cache(8 << 20, 1)).rejects.toMatchObject({ errno: NBD_EINVAL });
    } finally {
      await c.disconnect();
      await s.close();
    }
  });

  it('reports a read error of the range as EIO and keeps the connection', async () => {
    const dev = new FaultyDevice(new MemoryDevice({ size: 4 << 20 }), { rules: [{ ops: ['read'], range: { start: 2 << 20, end: 3 << 20 } }] });
    const s = await serveDevices([{ name: 'f', device: dev }]);
    const c = await NbdClient.connect({ port: s.port, export: 'f' });
    try {
      await expect(c.cache(0, 4 << 20)).rejects.toMatchObject({ errno: NBD_EIO });
      await c.cache(0, 1 << 20);
    } finally {
      await c.disconnect();
      await s.close();
    }
  });
});
