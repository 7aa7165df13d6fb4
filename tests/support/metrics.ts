import type { ServeProcess } from '../nbd/support.js';

/** Reading what `strata serve --metrics` exposes. */

/** One sample of the exposition: name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, as much of it as these metrics use (no escapes in label values). */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="([^"]*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample matching name and labels; 0 when absent (a counter never moved). */
export function metricValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  return hits[0]?.value ?? 0;
}

/** The address serve printed for its metrics (it was started with --metrics). */
export function metricsUrl(s: ServeProcess): string {
  const line = s.lines.find((l) => l.startsWith('metrics: '));
  if (!line) throw new Error(`serve printed no metrics line: ${s.lines.join(' | ')}`);
  return line.slice('metrics: '.length);
}

export async function scrapeMetrics(url: string): Promise<Sample[]> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
  return parseExposition(await res.text());
}
