import type { ByteSource } from '../byte-source.js';
import { ImageFormatError } from '../errors.js';
import type { ImageReader } from '../image-reader.js';
import { openDynamicVhd } from './dynamic-reader.js';
import { FOOTER_SIZE, isFooter, parseFooter } from './footer.js';
import { openFixedVhd } from './fixed-reader.js';

/** A VHD (qemu-img's "vpc"): dynamic and differencing disks start with a footer copy, fixed ones only end with one. */
export async function openVhd(source: ByteSource): Promise<ImageReader> {
  const head = await source.read(0, FOOTER_SIZE);
  if (isFooter(head)) {
    const footer = parseFooter(head);
    if (typeof footer === 'string') throw new ImageFormatError(source.name, 0, footer);
    // A fixed disk's guest data may itself begin with a footer-like sector; its own footer is at the end.
    if (footer.type !== 'fixed') return openDynamicVhd(source, footer);
  }
  return openFixedVhd(source, head);
}
