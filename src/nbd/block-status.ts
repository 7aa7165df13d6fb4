import type { BlockDevice, Extent } from '../blockdev/index.js';
import { BASE_ALLOCATION, STATE_HOLE, STATE_ZERO } from './constants.js';
import { coalesce, type Run } from './extent-runs.js';
import type { MetaContext } from './meta-contexts.js';
import { blockStatusChunk } from './replies.js';

/** One run of qemu:allocation-depth: 0 unallocated in every layer, 1 the top layer, 2 its parent … */
export interface DepthRun {
  offset: number;
  length: number;
  depth: number;
}

/** A device that knows which layer of its chain each range comes from (a pool volume, a snapshot). */
interface DepthReporting {
  allocationDepth(offset: number, length: number): Promise<DepthRun[]>;
}

function reportsDepth(device: BlockDevice): device is BlockDevice & DepthReporting {
  return typeof (device as Partial<DepthReporting>).allocationDepth === 'function';
}

const MAX_DEPTH = 0xffffffff;

/**
 * The reply to one BLOCK_STATUS: a chunk per selected context, in the order
 * they were selected, the last one flagged DONE (what qemu-nbd sends). At
 * most `maxDescriptors` in all, shared between the contexts, so the reply
 * stays within what the request was charged.
 */
export async function blockStatusReply(
  device: BlockDevice,
  contexts: readonly MetaContext[],
  offset: number,
  length: number,
  reqOne: boolean,
  maxDescriptors: number,
  cookieHi: number,
  cookieLo: number,
): Promise<Buffer[]> {
  // Asked once, whichever contexts need it: depth without a layer answer is read from it too.
  let status: Promise<Extent[]> | undefined;
  const extents = (): Promise<Extent[]> => (status ??= device.blockStatus ? device.blockStatus(offset, length) : Promise.resolve([]));
  const perContext = reqOne ? 1 : Math.max(1, Math.floor(maxDescriptors / contexts.length));
  const runs = await Promise.all(contexts.map((c) => (c.name === BASE_ALLOCATION ? allocationRuns(extents, offset, length) : depthRuns(device, extents, offset, length))));
  return contexts.map((c, i) => blockStatusChunk(c.id, descriptors(runs[i]!, perContext), cookieHi, cookieLo, i === contexts.length - 1));
}

async function allocationRuns(extents: () => Promise<Extent[]>, offset: number, length: number): Promise<Run[]> {
  return coalesce(await extents(), offset, length, (e) => (e.hole ? STATE_HOLE : 0) | (e.zero ? STATE_ZERO : 0), false);
}

/**
 * From the device's own depth answer when it has one; otherwise what its
 * allocation says (allocated: 1, a hole: 0), and a device that cannot tell
 * holes holds everything itself.
 */
async function depthRuns(device: BlockDevice, extents: () => Promise<Extent[]>, offset: number, length: number): Promise<Run[]> {
  if (reportsDepth(device)) {
    // A depth the wire cannot carry is dropped like any malformed extent, and its range reads as unallocated.
    const answer = (await device.allocationDepth(offset, length)).filter((e) => Number.isInteger(e.depth) && e.depth >= 0 && e.depth <= MAX_DEPTH);
    return coalesce(answer, offset, length, (e) => e.depth, false);
  }
  if (!device.blockStatus) return [{ offset, length, zero: false, state: 1 }];
  return coalesce(await extents(), offset, length, (e) => (e.hole ? 0 : 1), false);
}

function descriptors(runs: Run[], most: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(runs.length, most); i++) out.push(runs[i]!.length, runs[i]!.state);
  return out;
}
