/** Sizes as users type and read them: 512, 4K, 64M, 20G, 1T (powers of 1024). */
const UNITS = ['', 'K', 'M', 'G', 'T', 'P'] as const;

/** The largest byte count Strata reads, prints and stores exactly (2^53 − 1, 8P less one byte). */
export const MAX_SIZE = Number.MAX_SAFE_INTEGER;

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid size '${text}' (use a number with an optional K, M, G, T or P suffix)`);
  const exp = UNITS.indexOf(m[2]!.toUpperCase() as (typeof UNITS)[number]);
  const value = Number(m[1]) * 1024 ** exp;
  // Past 2^53 a Number no longer holds every whole byte count: that, not fractions, is what 8P and beyond run into.
  if (value > MAX_SIZE) throw new Error(`size '${text}' is too large: sizes go up to ${MAX_SIZE} bytes (8P less one byte)`);
  if (!Number.isInteger(value)) throw new Error(`invalid size '${text}' (not a whole number of bytes)`);
  return value;
}

/**
 * Exact when the size is a whole number of its unit (64M), otherwise rounded
 * to three significant digits (1.5G, 12.3M): for reading, not for parsing back.
 */
export function formatSize(bytes: number): string {
  let exp = 0;
  while (exp < UNITS.length - 1 && bytes >= 1024 ** (exp + 1)) exp++;
  if (exp === 0) return String(bytes);
  const v = bytes / 1024 ** exp;
  if (Number.isInteger(v)) return `${v}${UNITS[exp]}`;
  const rounded = Number(v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0));
  // 1023.96K rounds to 1024K: say 1M.
  if (rounded >= 1024 && exp < UNITS.length - 1) return `1${UNITS[exp + 1]}`;
  return `${rounded}${UNITS[exp]}`;
}
