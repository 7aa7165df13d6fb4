/** The kind of one run of what is written: data to copy, zeroes the writer may store as such, or unallocated. */
export type RunKind = 'data' | 'zero' | 'hole';

export interface ContentRun {
  offset: number;
  length: number;
  kind: RunKind;
}

/** What a writer writes: a volume (or its NBD export) seen as runs and reads. */
export interface ImageContent {
  readonly size: number;
  /** Runs covering [0, size) in increasing order, adjacent ones of one kind merged. */
  runs(): AsyncIterable<ContentRun>;
  /** Fills `buf` from `offset`; verified (checksums) by the volume below. */
  read(buf: Buffer, offset: number): Promise<void>;
}

/** Where a writer writes: a file (seekable), or a stream or tar member written front to back. */
export interface ByteSink {
  readonly name: string;
  readonly seekable: boolean;
  /** Writes `buf` at `offset`. Not seekable: offsets never go back, and a gap is written as zeroes. */
  write(buf: Buffer, offset: number): Promise<void>;
  /** Ends the output at exactly `size` bytes (a file is cut or extended sparse; a stream zero-padded) and makes it durable. */
  finish(size: number): Promise<void>;
}

export interface WriteOptions {
  /** vmdk: monolithicSparse (default) | streamOptimized; vhd: dynamic (default) | fixed. */
  subformat?: string;
  /** The image's own file name, for formats that record it (a VMDK's extent line); the sink's base name unless said. */
  fileName?: string;
  /** Bytes of content handled so far, for a progress bar. */
  progress?: (done: number) => void;
  signal?: AbortSignal;
}

export interface WriteResult {
  /** Bytes of the image file. */
  fileSize: number;
  /** Content bytes stored as data. */
  dataBytes: number;
}

/**
 * Writes `content` as an image. Holes and zero runs are not written as data;
 * a writer that needs to go back (tables after the data) refuses a sink that
 * is not seekable, naming the format.
 */
export type ImageWriter = (content: ImageContent, sink: ByteSink, opts: WriteOptions) => Promise<WriteResult>;
