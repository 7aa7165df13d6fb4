import { MAX_SETTINGS_BYTES, PoolError, type JsonValue, type TemplateSettings } from '../qcowlike/index.js';

/**
 * A template's settings as the catalog may keep them: a plain JSON object
 * (nothing JSON would not give back as it was: no NaN, no undefined, no
 * class instances) of at most MAX_SETTINGS_BYTES. Whatever comes over the
 * control socket passes here before it reaches the catalog.
 */
export function checkSettings(value: unknown, what = 'template settings'): TemplateSettings {
  if (!isObject(value)) throw new PoolError('EINVAL', `${what} must be a JSON object`);
  const problem = jsonProblem(value, '');
  if (problem !== null) throw new PoolError('EINVAL', `${what}: ${problem}`);
  const bytes = Buffer.byteLength(JSON.stringify(value), 'utf8');
  if (bytes > MAX_SETTINGS_BYTES) throw new PoolError('EINVAL', `${what} take ${bytes} bytes of JSON, more than the ${MAX_SETTINGS_BYTES} a template keeps`);
  return value as TemplateSettings;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

/** Where `v` is not plain JSON, or null; nesting is bounded so a hostile value cannot exhaust the stack. */
function jsonProblem(v: unknown, at: string, depth = 0): string | null {
  if (depth > 16) return `${at || 'the value'} is nested more than 16 deep`;
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return null;
  if (typeof v === 'number') return Number.isFinite(v) ? null : `${at} is not a finite number`;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = jsonProblem(v[i], `${at}[${i}]`, depth + 1);
      if (p !== null) return p;
    }
    return null;
  }
  if (isObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      const p = jsonProblem(x, at === '' ? k : `${at}.${k}`, depth + 1);
      if (p !== null) return p;
    }
    return null;
  }
  return `${at} is not a JSON value`;
}

/** A deep copy, so that a template's settings and its copy's never share an object. */
export function copySettings(s: TemplateSettings): TemplateSettings {
  return JSON.parse(JSON.stringify(s)) as { [key: string]: JsonValue };
}
