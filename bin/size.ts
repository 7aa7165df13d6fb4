/** Sizes as users type and read them: 512, 4K, 64M, 20G, 1T (powers of 1024). */
const UNITS = ['', 'K', 'M', 'G', 'T', 'P'] as const;

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid size '${text}' (use a number with an optional K, M, G, T or P suffix)`);
  const exp = UNITS.indexOf(m[2]!.toUpperCase() as (typeof UNITS)[number]);
  const value = Number(m[1]) * 1024 ** exp;
  if (!Number.isSafeInteger(value)) throw new Error(`invalid size '${text}' (not a whole number of bytes)`);
  return value;
}

export function formatSize(bytes: number): string {
  let exp = 0;
  while (exp < UNITS.length - 1 && bytes >= 1024 ** (exp + 1)) exp++;
  if (exp === 0) return String(bytes);
  const v = bytes / 1024 ** exp;
  const text = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, '');
  return `${text}${UNITS[exp]}`;
}
