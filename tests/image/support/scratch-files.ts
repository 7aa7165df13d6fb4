import path from 'node:path';
import { afterAll } from 'vitest';
import { scratchDir } from '../../support/scratch.js';

/** Names fresh files in a scratch directory that goes when the test file ends. */
export function scratchFiles(prefix: string): ((name: string) => string) & { dir: string } {
  const scratch = scratchDir(prefix);
  afterAll(() => scratch.cleanup());
  let n = 0;
  return Object.assign((name: string) => path.join(scratch.dir, `${n++}-${name}`), { dir: scratch.dir });
}
