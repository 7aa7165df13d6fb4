import fc from 'fast-check';
import { expect, it } from 'vitest';
import { BlockDeviceError, Rng, type BlockDevice } from '../../src/blockdev/index.js';
import { propertyRuns } from './scratch.js';

/**
 * The one property every BlockDevice must pass (the contract in src/blockdev/device.ts): random
 * sequences of read / write / flush / discard / write-zeroes, checked byte for
 * byte against a plain array. Every device, RAID level and volume runs it.
 */
export type DeviceOp =
  | { op: 'write'; offset: number; length: number; seed: number; fua: boolean }
  | { op: 'read'; offset: number; length: number }
  | { op: 'flush' }
  | { op: 'discard'; offset: number; length: number }
  | { op: 'writeZeroes'; offset: number; length: number; mayUnmap: boolean }
  | { op: 'concurrentWrites'; offsets: number[]; length: number; seed: number }
  | { op: 'outOfRange'; kind: 'read' | 'write'; past: number };

export function deviceOps(size: number, maxLength: number): fc.Arbitrary<DeviceOp[]> {
  const span = fc.integer({ min: 0, max: size - 1 }).chain((offset) =>
    fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 0, max: Math.min(maxLength, size - offset) }) }),
  );
  const op: fc.Arbitrary<DeviceOp> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ s: span, seed: fc.integer(), fua: fc.boolean() }).map(({ s, seed, fua }) => ({ op: 'write' as const, ...s, seed, fua })) },
    { weight: 4, arbitrary: span.map((s) => ({ op: 'read' as const, ...s })) },
    { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    { weight: 2, arbitrary: span.map((s) => ({ op: 'discard' as const, ...s })) },
    { weight: 2, arbitrary: fc.record({ s: span, mayUnmap: fc.boolean() }).map(({ s, mayUnmap }) => ({ op: 'writeZeroes' as const, ...s, mayUnmap })) },
    {
      weight: 1,
      arbitrary: fc
        .record({ n: fc.integer({ min: 2, max: 6 }), length: fc.integer({ min: 1, max: Math.max(1, Math.floor(size / 8)) }), seed: fc.integer() })
        .map(({ n, length, seed }) => {
          // Disjoint slots so the outcome does not depend on completion order.
          const slots = Math.floor(size / length);
          const rng = new Rng(seed);
          const picked = new Set<number>();
          while (picked.size < Math.min(n, slots)) picked.add(rng.below(slots));
          return { op: 'concurrentWrites' as const, offsets: [...picked].map((s) => s * length), length, seed };
        }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('read' as const, 'write' as const), past: fc.integer({ min: 1, max: 4096 }) }).map((r) => ({ op: 'outOfRange' as const, ...r })) },
  );
  return fc.array(op, { minLength: 1, maxLength: 40 });
}

export function pattern(length: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(length / 4));
  const rng = new Rng(seed);
  for (let i = 0; i < words.length; i++) words[i] = Math.floor(rng.next() * 4294967296);
  return Buffer.from(words.buffer, 0, length);
}

/** Applies ops to the device and to the model, asserting each read against the model. */
export async function runAgainstModel(dev: BlockDevice, model: Uint8Array, ops: DeviceOp[]): Promise<void> {
  for (const o of ops) {
    switch (o.op) {
      case 'write': {
        const data = pattern(o.length, o.seed);
        await dev.write(data, o.offset, { fua: o.fua });
        model.set(data, o.offset);
        break;
      }
      case 'read': {
        const buf = Buffer.alloc(o.length, 0xa5);
        await dev.read(buf, o.offset);
        expect(Buffer.compare(buf, model.subarray(o.offset, o.offset + o.length)), `read at ${o.offset}+${o.length}`).toBe(0);
        break;
      }
      case 'flush':
        await dev.flush();
        break;
      case 'discard':
        await dev.discard(o.offset, o.length);
        if (dev.discardZeroes) model.fill(0, o.offset, o.offset + o.length);
        else {
          // Contents are unspecified after discard: take what the device now says.
          const buf = Buffer.alloc(o.length);
          await dev.read(buf, o.offset);
          model.set(buf, o.offset);
        }
        break;
      case 'writeZeroes':
        await dev.writeZeroes(o.offset, o.length, { mayUnmap: o.mayUnmap });
        model.fill(0, o.offset, o.offset + o.length);
        break;
      case 'concurrentWrites': {
        const datas = o.offsets.map((_, i) => pattern(o.length, o.seed + i));
        await Promise.all(o.offsets.map((off, i) => dev.write(datas[i]!, off)));
        o.offsets.forEach((off, i) => model.set(datas[i]!, off));
        break;
      }
      case 'outOfRange': {
        const buf = Buffer.alloc(o.past + 1);
        const at = dev.size - 1;
        const p = o.kind === 'read' ? dev.read(buf, at) : dev.write(buf, at);
        await expect(p).rejects.toSatisfy((e: unknown) => e instanceof BlockDeviceError && e.code === 'ERANGE');
        break;
      }
    }
  }
  const all = Buffer.alloc(dev.size);
  await dev.read(all, 0);
  expect(Buffer.compare(all, model), 'whole-device read matches the model').toBe(0);
}

export interface ContractSubject {
  name: string;
  size: number;
  /** A fresh, zero-filled device of `size` bytes, and how to dispose of it. */
  make: () => Promise<{ dev: BlockDevice; dispose: () => Promise<void> }>;
  /** Longest single request to generate. */
  maxLength?: number;
  runs?: number;
}

export function blockDeviceContract(subject: ContractSubject): void {
  it(`${subject.name} matches a plain byte array under random operation sequences`, async () => {
    await fc.assert(
      fc.asyncProperty(deviceOps(subject.size, subject.maxLength ?? 70_000), async (ops) => {
        const { dev, dispose } = await subject.make();
        try {
          await runAgainstModel(dev, new Uint8Array(subject.size), ops);
        } finally {
          await dispose();
        }
      }),
      { numRuns: propertyRuns(subject.runs ?? 300) },
    );
  }, 300_000);
}
