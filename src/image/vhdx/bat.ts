import { ImageFormatError } from '../errors.js';
import { MIB } from './header-section.js';
import type { VhdxMetadata } from './metadata.js';

/** What a payload block holds, as its BAT entry says. */
export type BlockState = 'absent' | 'zero' | 'present';

/** Payload block states of MS-VHDX 2.5.1.1. */
const STATES: Record<number, BlockState | 'partial'> = { 0: 'absent', 1: 'absent', 2: 'zero', 3: 'absent', 6: 'present', 7: 'partial' };

export interface BatLayout {
  payloadBlocks: number;
  /** Payload blocks between two sector bitmap entries. */
  chunkRatio: number;
  entries: number;
}

export function batLayout(m: VhdxMetadata): BatLayout {
  const payloadBlocks = Math.ceil(m.virtualSize / m.blockSize);
  const chunkRatio = (2 ** 23 * m.logicalSectorSize) / m.blockSize;
  return { payloadBlocks, chunkRatio, entries: payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio) };
}

/** The state and file offset of payload block `block`, from the BAT (found at file offset `at`). */
export function payloadEntry(name: string, bat: Buffer, at: number, layout: BatLayout, block: number): { state: BlockState; file: number } {
  const index = block + Math.floor(block / layout.chunkRatio);
  const low = bat.readUInt32LE(index * 8);
  const high = bat.readUInt32LE(index * 8 + 4);
  const state = STATES[low & 7];
  if (state === 'partial') throw new ImageFormatError(name, at + index * 8, `block ${block} is partially present, which only a differencing VHDX may be`);
  if (!state) throw new ImageFormatError(name, at + index * 8, `block ${block} has the unknown state ${low & 7}`);
  return { state, file: ((low >>> 20) + high * 4096) * MIB };
}
