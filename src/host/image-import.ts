import type { BlockDevice } from '../blockdev/index.js';
import { deviceSink } from '../image/device-sink.js';
import type { Pool, VolumeHandle } from '../qcowlike/index.js';
import { createSnapshots } from '../snapshot/snapshots.js';
import type { ChainLayer } from './image-chain.js';

/** Where a chain is written: the volume (or its NBD export), and how a layer is frozen as a snapshot under it. */
export interface ChainTarget {
  device: BlockDevice;
  /** Freezes what is written so far as snapshot `name`; the device to write the next layer into (the same, or reopened). */
  snapshot(name: string): Promise<BlockDevice>;
}

export interface ChainImportOptions {
  /** The volume was created for this import: it reads zeroes wherever the base writes nothing. */
  fresh: boolean;
  /** Snapshot names of the layers below the top, base first; null flattens the chain into the volume. */
  snapshots: string[] | null;
  progress?: (bytes: number) => void;
  signal?: AbortSignal;
}

export interface ChainImportResult {
  dataBytes: number;
  zeroBytes: number;
  snapshots: string[];
}

/**
 * Decodes a chain into the target, base first. Only the base leaves its zero
 * runs unwritten (a volume that existed is zeroed first, so it reads zeroes
 * too): an overlay's zero clusters must hide what the layers below hold, so
 * they are written as zeroes (which the pool keeps as zero records, not data).
 */
export async function importChain(layers: ChainLayer[], target: ChainTarget, opts: ChainImportOptions): Promise<ChainImportResult> {
  let device = target.device;
  const result: ChainImportResult = { dataBytes: 0, zeroBytes: 0, snapshots: [] };
  // A volume that held data reads as the image only if what the image leaves unallocated reads zeroes too.
  if (!opts.fresh) await zeroRange(device, Math.min(device.size, layers[layers.length - 1]!.reader.virtualSize));
  for (const [i, layer] of layers.entries()) {
    if (layer.reader.virtualSize > device.size) throw new Error(`${layer.file} (${layer.reader.virtualSize} bytes) is larger than ${device.name} (${device.size} bytes)`);
    const sink = deviceSink(device, { readsZeroes: i === 0, ...(opts.progress ? { progress: opts.progress } : {}) });
    try {
      await layer.reader.decode(sink, opts.signal);
    } catch (err) {
      // Writes still in flight finish (or fail) before anything else touches the device; the decode's error is the one told.
      await sink.drain().catch(() => undefined);
      throw err;
    }
    await sink.drain();
    result.dataBytes += sink.stats.dataBytes;
    result.zeroBytes += sink.stats.zeroBytes;
    const name = opts.snapshots?.[i];
    if (name !== undefined && i < layers.length - 1) {
      device = await target.snapshot(name);
      result.snapshots.push(name);
    }
  }
  return result;
}

/** Write-zeroes requests this large at most: an NBD request's length is 32 bits. */
const ZERO_SPAN = 1 << 30;

async function zeroRange(device: BlockDevice, length: number): Promise<void> {
  for (let at = 0; at < length; at += ZERO_SPAN) await device.writeZeroes(at, Math.min(ZERO_SPAN, length - at), { mayUnmap: true });
}

/**
 * A volume of an open pool as a chain's target. A snapshot is taken with the
 * volume closed (what was written flushed first) and the volume opened again
 * above it, as `strata snapshot create` does on a pool it opens itself.
 */
export async function volumeTarget(pool: Pool, name: string): Promise<{ target: ChainTarget; handle: () => VolumeHandle }> {
  let volume = await pool.openVolume(name);
  const target: ChainTarget = {
    device: volume,
    snapshot: async (snapshot) => {
      await volume.flush();
      await volume.close();
      await createSnapshots(pool, [{ volume: name, snapshot }]);
      volume = await pool.openVolume(name);
      return volume;
    },
  };
  return { target, handle: () => volume };
}
