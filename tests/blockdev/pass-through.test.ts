import { describe, expect, it } from 'vitest';
import { FaultyDevice, MemoryDevice, PassThroughDevice, type BlockDevice, type Extent, type Redundancy } from '../../src/blockdev/index.js';

/** A memory device that also answers block status and offers a second copy, as a volume or a RAID array does. */
function withHooks(): { dev: BlockDevice; redundancy: Redundancy } {
  const redundancy: Redundancy = { copies: () => 2, readCopy: async () => undefined, repair: async () => 0 };
  const dev = Object.assign(new MemoryDevice({ size: 1 << 20, name: 'hooked' }), {
    redundancy,
    blockStatus: async (offset: number, length: number): Promise<Extent[]> => [{ offset, length, hole: true, zero: true }],
  });
  return { dev, redundancy };
}

describe('pass-through wrappers', () => {
  it('a fault-injecting wrapper keeps block status and redundancy of the device it wraps', async () => {
    const { dev, redundancy } = withHooks();
    const faulty = new FaultyDevice(dev, { rules: [{ ops: ['read'] }] });
    expect(faulty.redundancy).toBe(redundancy);
    expect(await faulty.blockStatus?.(4096, 8192)).toEqual([{ offset: 4096, length: 8192, hole: true, zero: true }]);
    await expect(faulty.read(Buffer.alloc(512), 0)).rejects.toThrow(/injected fault/);
    expect(faulty.name).toBe('faulty(hooked)');
  });

  it('has no block status where the inner device has none', () => {
    const plain = new PassThroughDevice(new MemoryDevice({ size: 4096 }));
    expect(plain.blockStatus).toBeUndefined();
    expect(plain.redundancy).toBeUndefined();
    expect(plain.size).toBe(4096);
  });
});
