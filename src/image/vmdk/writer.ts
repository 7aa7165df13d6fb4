import type { ByteSink, ImageContent, WriteResult } from '../image-writer.js';
import type { VmdkWriteOptions } from './layout.js';
import { writeMonolithicSparse } from './write-sparse.js';
import { writeStreamOptimized } from './write-stream.js';

export const VMDK_SUBFORMATS = ['monolithicSparse', 'streamOptimized'] as const;

/** Writes `content` as a VMDK of `opts.subformat` (monolithicSparse unless said). */
export async function writeVmdk(content: ImageContent, sink: ByteSink, opts: VmdkWriteOptions): Promise<WriteResult> {
  if (content.size <= 0) throw new Error(`${sink.name}: a VMDK cannot hold a disk of ${content.size} bytes`);
  const sub = opts.subformat ?? 'monolithicSparse';
  if (sub === 'monolithicSparse') return writeMonolithicSparse(content, sink, opts);
  if (sub === 'streamOptimized') return writeStreamOptimized(content, sink, opts);
  throw new Error(`VMDK subformat "${sub}" is not written (${VMDK_SUBFORMATS.join(', ')} are)`);
}
