import { describe, expect, it } from 'vitest';
import { NbdClient, NbdServer, SparseMemoryDevice, StaticExportSource } from '../../src/nbd/index.js';

describe('the server log', () => {
  it('names a TCP client whose connection failed by its address, even once its socket is gone', async () => {
    const lines: string[] = [];
    // The export's release fails: that is reported after the client has disconnected and its socket closed.
    const source = new StaticExportSource([{ name: 'd', open: async () => new SparseMemoryDevice(1 << 20), release: async () => Promise.reject(new Error('release failed')) }]);
    const server = new NbdServer({ source, log: (m) => lines.push(m) });
    const bound = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const client = await NbdClient.connect({ host: '127.0.0.1', port: 'port' in bound ? bound.port : 0, export: 'd' });
      await client.read(0, 4096);
      await client.disconnect();
      for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(lines).toEqual([expect.stringMatching(/^connection from 127\.0\.0\.1:\d+ failed: release failed$/)]);
    } finally {
      await server.close();
    }
  });
});
