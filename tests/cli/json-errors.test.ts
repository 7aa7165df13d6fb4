import { describe, expect, it } from 'vitest';
import { scratchDir } from '../support/scratch.js';
import { buildCli, ok, strata } from './strata.js';

describe('--json errors', () => {
  it('are one JSON document on stderr, with the same exit status as the line they replace', () => {
    buildCli();
    const { dir, cleanup } = scratchDir('json-errors');
    try {
      ok(dir, ['pool', 'create', 'p', '--size', '1G']);
      const plain = strata(dir, ['volume', 'info', 'p/nope']);
      const json = strata(dir, ['--json', 'volume', 'info', 'p/nope']);
      expect(plain.code).toBe(1);
      expect(json.code).toBe(1);
      expect(JSON.parse(json.stderr)).toEqual({ error: plain.stderr.replace(/^strata: /, '').trim() });
      expect(json.stdout).toBe('');
    } finally {
      cleanup();
    }
  });
});
