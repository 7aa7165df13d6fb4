import type { OnlineMigrationRequest } from './online-migration.js';

export const ONLINE_MIGRATION_OP = 'migrate-online';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a hot-migration request that came over the control socket, field by field. */
export function parseOnlineMigration(raw: Record<string, unknown>): OnlineMigrationRequest {
  const name = (key: string, what: string): string => {
    const v = raw[key];
    if (typeof v !== 'string' || !NAME.test(v)) throw new Error(`'${ONLINE_MIGRATION_OP}' needs '${key}' (${what})`);
    return v;
  };
  const rate = raw.rate;
  if (rate !== undefined && (typeof rate !== 'number' || !Number.isSafeInteger(rate) || rate < 0)) throw new Error("'rate' must be a whole number of bytes per second");
  return { op: ONLINE_MIGRATION_OP, volume: name('volume', 'a volume name'), targetPool: name('targetPool', 'a pool name'), targetVolume: name('targetVolume', 'a volume name'), ...(typeof rate === 'number' && rate > 0 ? { rate } : {}) };
}
