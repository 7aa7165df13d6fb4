import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A fresh directory for one test file's scratch files, removed by the returned cleanup. */
export function scratchDir(prefix: string): { dir: string; cleanup: () => void } {
  const base = process.env.STRATA_SCRATCH ?? os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, `strata-${prefix}-`));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** How many random cases a property runs: more in CI, fewer while iterating. */
export function propertyRuns(ciRuns: number, localRuns = Math.max(20, Math.floor(ciRuns / 4))): number {
  const forced = Number(process.env.STRATA_PROPERTY_RUNS);
  if (Number.isFinite(forced) && forced > 0) return forced;
  return process.env.CI === 'true' ? ciRuns : localRuns;
}
