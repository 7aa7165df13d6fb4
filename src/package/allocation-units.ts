/**
 * Multipliers of the DMTF programmatic units (DSP0004 annex C) as OVF uses
 * them for capacities and memory: `byte`, `byte * 2^30`, `byte*10^9`, and
 * the older names OVF 1.0 tools still write (`MegaBytes`, `GB`).
 */
const NAMED: Record<string, number> = {
  byte: 1,
  bytes: 1,
  kilobytes: 2 ** 10,
  kb: 2 ** 10,
  kib: 2 ** 10,
  megabytes: 2 ** 20,
  mb: 2 ** 20,
  mib: 2 ** 20,
  gigabytes: 2 ** 30,
  gb: 2 ** 30,
  gib: 2 ** 30,
  terabytes: 2 ** 40,
  tb: 2 ** 40,
  tib: 2 ** 40,
};

/** The number of bytes one unit is, or null when `units` is not a byte unit this reads. */
export function unitBytes(units: string): number | null {
  const u = units.replace(/\s+/g, '').toLowerCase();
  if (u in NAMED) return NAMED[u]!;
  const m = /^bytes?((?:\*\d+(?:\^\d+)?)*)$/.exec(u);
  if (!m) return null;
  let factor = 1;
  for (const term of m[1]!.split('*').slice(1)) {
    const [base, exp] = term.split('^');
    factor *= Number(base) ** (exp === undefined ? 1 : Number(exp));
  }
  return Number.isSafeInteger(factor) && factor > 0 ? factor : null;
}

/** Bytes as a quantity and units the way VMware and VirtualBox write them: whole GiB, MiB or bytes. */
export function bytesInUnits(bytes: number, largest: 30 | 20 = 30): { quantity: number; units: string } {
  for (const shift of [largest, 20, 10].filter((s) => s <= largest)) {
    if (bytes % 2 ** shift === 0) return { quantity: bytes / 2 ** shift, units: `byte * 2^${shift}` };
  }
  return { quantity: bytes, units: 'byte' };
}
