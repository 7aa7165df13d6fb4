import type { ByteSource } from './byte-source.js';

/** The formats Strata reads and writes natively. */
export type DiskFormat = 'raw' | 'qcow2' | 'vmdk' | 'vhd' | 'vhdx';

/** An image this one is an overlay of (qcow2's backing file, a differencing VHD's parent), as the image names it. */
export interface BackingRef {
  /** The name as stored: a path, usually relative to the image's own directory. */
  file: string;
  /** The backing image's format when the image says it. */
  format: DiskFormat | null;
}

/**
 * Where decoded content goes. Readers report only what their own layer
 * allocates: data, and ranges the format marks as reading zeroes (qcow2 zero
 * clusters, VMDK zero grains). A range never reported is unallocated: it
 * reads from the backing image, or zeroes when there is none.
 */
export interface ImageSink {
  /** `buf` holds the bytes at virtual `offset`; the sink owns it from here on (the reader must not reuse it). */
  data(offset: number, buf: Buffer): Promise<void>;
  zero(offset: number, length: number): Promise<void>;
}

export interface ImageReader {
  readonly format: DiskFormat;
  /** The subformat when the format has several (vmdk: monolithicSparse, streamOptimized; vhd: fixed, dynamic). */
  readonly subformat: string | null;
  /** Bytes the guest sees. */
  readonly virtualSize: number;
  readonly backing: BackingRef | null;
  /** What the image holds that an import leaves behind (internal snapshots, a dirty flag), one line each. */
  readonly notes: string[];
  /**
   * Reports every allocated range of this image's own layer to `sink`, each
   * once, in any virtual order. Reads the source in increasing offset order
   * (pending tables and clusters kept by file offset), so a forward-only
   * source works wherever the layout puts metadata before the data it maps;
   * adjacent clusters are read together. Throws ImageFormatError, naming the
   * offset, for anything that does not add up (a table past the end, an
   * entry out of range, a cluster claimed twice, data past the virtual size).
   */
  decode(sink: ImageSink, signal?: AbortSignal): Promise<void>;
}

/** Opens a reader after checking the header; reads no data yet. */
export type OpenReader = (source: ByteSource) => Promise<ImageReader>;
