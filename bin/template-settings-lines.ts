import type { JsonValue, TemplateSettings } from '../src/qcowlike/index.js';
import { formatSize } from './size.js';

/**
 * A template's settings as `template info` lines: one `vm KEY` field per
 * setting, a list one item a line (`vm disks[1]`), an object item as
 * `key=value` pairs. The shape is the package layer's; this only prints it.
 */
export function settingsLines(settings: TemplateSettings | null): [string, string][] {
  if (settings === null) return [['vm', '- (none: not imported from a package)']];
  const out: [string, string][] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (Array.isArray(value)) {
      if (value.length === 0) out.push([`vm ${key}`, 'none']);
      value.forEach((item, i) => out.push([`vm ${key}[${i + 1}]`, inline(item)]));
    } else out.push([`vm ${key}`, inline(value, key)]);
  }
  return out;
}

/** Byte counts (`memoryBytes`, a disk's `capacity`) read as sizes. */
const isBytes = (key: string): boolean => key === 'capacity' || key.endsWith('Bytes');

function inline(v: JsonValue, key = ''): string {
  if (v === null) return '-';
  if (typeof v === 'number' && isBytes(key) && Number.isSafeInteger(v) && v >= 0) return `${formatSize(v)} (${v} bytes)`;
  if (Array.isArray(v)) return v.map((x) => inline(x)).join(', ');
  if (typeof v === 'object')
    return Object.entries(v)
      .filter(([, x]) => x !== null)
      .map(([k, x]) => `${k}=${typeof x === 'number' && isBytes(k) ? formatSize(x) : typeof x === 'object' ? JSON.stringify(x) : String(x)}`)
      .join(' ');
  return String(v);
}
