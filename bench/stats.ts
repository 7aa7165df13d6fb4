/** Small helpers shared by the benchmarks: medians over rounds, and readable numbers. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function fmtRate(v: number, unit: 'IOPS' | 'MB/s'): string {
  return unit === 'IOPS' ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
}

export function markdownTable(header: string[], rows: string[][]): string {
  return [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}
