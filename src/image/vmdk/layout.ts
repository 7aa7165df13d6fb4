import path from 'node:path';
import type { ByteSink, WriteOptions } from '../image-writer.js';
import { type AdapterType, writeDescriptor } from './descriptor.js';
import { encodeHeader, ENTRY_BYTES, SECTOR, type SparseHeader } from './header.js';

/** What a VMDK export may set beyond the shared options; OVF packages name the controller their disk hangs on. */
export interface VmdkWriteOptions extends WriteOptions {
  /** ddb.adapterType; ide unless said (what qemu-img writes). */
  adapterType?: AdapterType;
  /** ddb.virtualHWVersion; "4" unless said. */
  hwVersion?: string;
}

/** 64 KiB grains and 512-entry tables: what VMware and qemu-img write, and all that some readers accept. */
export const GRAIN_SECTORS = 128;
export const GTES_PER_GT = 512;
/** Sectors kept for the embedded descriptor, as qemu-img keeps. */
export const DESCRIPTOR_SECTORS = 20;

export interface Geometry {
  capacity: number;
  grainBytes: number;
  gtCount: number;
  /** Sectors of one grain table and of the grain directory. */
  gtSectors: number;
  gdSectors: number;
}

export function geometry(size: number): Geometry {
  const capacity = Math.ceil(size / SECTOR);
  const gtCount = Math.ceil(Math.ceil(capacity / GRAIN_SECTORS) / GTES_PER_GT);
  return { capacity, grainBytes: GRAIN_SECTORS * SECTOR, gtCount, gtSectors: (GTES_PER_GT * ENTRY_BYTES) / SECTOR, gdSectors: Math.ceil((gtCount * ENTRY_BYTES) / SECTOR) };
}

/** The header sector followed by the descriptor's sectors, as written at the start of the file. */
export function headBytes(header: SparseHeader, sink: ByteSink, opts: VmdkWriteOptions, createType: 'monolithicSparse' | 'streamOptimized'): Buffer {
  const text = writeDescriptor({
    createType,
    sectors: header.capacity,
    fileName: opts.fileName ?? path.basename(sink.name),
    adapterType: opts.adapterType ?? 'ide',
    hwVersion: opts.hwVersion ?? '4',
  });
  const desc = Buffer.alloc(header.descriptorSize * SECTOR);
  if (Buffer.byteLength(text) > desc.length) throw new Error(`${sink.name}: the VMDK descriptor does not fit its ${desc.length} bytes`);
  desc.write(text, 'latin1');
  return Buffer.concat([encodeHeader(header), desc]);
}
