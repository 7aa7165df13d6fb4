import { parseSize } from './size.js';

/** What `volume resize` was asked: an absolute size, or an amount to grow (`+SIZE`) or shrink (`-SIZE`) by. */
export interface ResizeBy {
  size: number;
  grow: boolean;
  shrink?: boolean;
}

/**
 * Reads the SIZE argument of `volume resize`. The command lets unknown
 * options through so that `-SIZE` reaches here: anything after a dash that is
 * not a size is refused as the unknown option it is.
 */
export function resizeBy(text: string): ResizeBy {
  if (text.startsWith('+')) return { size: parseSize(text.slice(1)), grow: true };
  if (text.startsWith('-')) {
    if (!/^-\d/.test(text)) throw new Error(`unknown option '${text}'`);
    return { size: parseSize(text.slice(1)), grow: false, shrink: true };
  }
  return { size: parseSize(text), grow: false };
}
