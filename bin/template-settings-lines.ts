import type { JsonValue, TemplateSettings } from '../src/qcowlike/index.js';

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
    } else out.push([`vm ${key}`, inline(value)]);
  }
  return out;
}

function inline(v: JsonValue): string {
  if (v === null) return '-';
  if (Array.isArray(v)) return v.map(inline).join(', ');
  if (typeof v === 'object')
    return Object.entries(v)
      .filter(([, x]) => x !== null)
      .map(([k, x]) => `${k}=${typeof x === 'object' ? JSON.stringify(x) : String(x)}`)
      .join(' ');
  return String(v);
}
