/**
 * The key/value pairs of a VHDX parent locator (MS-VHDX 2.6.2.6), UTF-16LE
 * strings at offsets from the item's start. Null when the item does not
 * hold together: it only names the parent in a refusal.
 */
export function parentLocatorEntries(item: Buffer): Map<string, string> | null {
  if (item.length < 20) return null;
  const count = item.readUInt16LE(18);
  if (20 + 12 * count > item.length) return null;
  const out = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const e = 20 + 12 * i;
    const key = text(item, item.readUInt32LE(e), item.readUInt16LE(e + 8));
    const value = text(item, item.readUInt32LE(e + 4), item.readUInt16LE(e + 10));
    if (key === null || value === null) return null;
    out.set(key, value);
  }
  return out;
}

function text(item: Buffer, offset: number, length: number): string | null {
  return offset + length > item.length ? null : item.toString('utf16le', offset, offset + length);
}

/** The parent's path as the locator best says it: relative first, then absolute. */
export function parentPath(item: Buffer | undefined): string | null {
  const entries = item ? parentLocatorEntries(item) : null;
  const path = entries?.get('relative_path') ?? entries?.get('absolute_win32_path') ?? entries?.get('volume_path');
  return path === undefined ? null : path.replace(/\\/g, '/');
}
