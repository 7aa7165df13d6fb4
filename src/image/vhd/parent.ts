import type { DynamicHeader, ParentLocator } from './dynamic-header.js';

/** Locator platforms in the order a relative name is best found. */
const PREFERENCE = ['W2ru', 'Wi2r', 'MacX', 'W2ku', 'Wi2k'];

/** The text of one locator's data, as a path with forward slashes. */
export function locatorPath(locator: ParentLocator, data: Buffer): string {
  const raw = locator.platform.startsWith('W2') ? data.toString('utf16le') : data.toString('utf8');
  let text = raw.replace(/\0+$/, '');
  if (locator.platform === 'MacX') text = decodeURIComponent(text.replace(/^file:\/\/(localhost)?/, ''));
  else text = text.replace(/\\/g, '/');
  return text.replace(/^\.\//, '');
}

/**
 * The parent of a differencing disk as a backing file name: a relative
 * locator when there is one, else the header's unicode name (a file name in
 * the disk's directory), else an absolute locator. Null when none says it.
 */
export function parentName(header: DynamicHeader, data: Map<ParentLocator, Buffer>): string | null {
  const ranked = [...header.locators].sort((a, b) => rank(a) - rank(b));
  for (const locator of ranked) {
    if (rank(locator) > PREFERENCE.indexOf('MacX')) break;
    const text = locatorPath(locator, data.get(locator) ?? Buffer.alloc(0));
    if (text) return text;
  }
  if (header.parentName) return header.parentName;
  for (const locator of ranked) {
    if (rank(locator) === PREFERENCE.length) break;
    const text = locatorPath(locator, data.get(locator) ?? Buffer.alloc(0));
    if (text) return text;
  }
  return null;
}

function rank(locator: ParentLocator): number {
  const at = PREFERENCE.indexOf(locator.platform);
  return at < 0 ? PREFERENCE.length : at;
}
