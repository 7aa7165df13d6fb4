import { describe, expect, it } from 'vitest';
import { parseNbdBenchArgs, SUITES, type NbdBenchOptions } from '../../bench/nbd-options.js';

const parse = (...argv: string[]): NbdBenchOptions => {
  const o = parseNbdBenchArgs(argv);
  if (o === 'help') throw new Error('help');
  return o;
};

describe('npm run bench options', () => {
  it('compares strata with qemu-nbd and nbdkit when told nothing', () => {
    const o = parse();
    expect(o.comparisons).toEqual([{ name: 'servers', servers: ['strata', 'qemu-nbd', 'nbdkit'] }]);
    expect(o.setups.map((s) => s.name)).toEqual(['strata', 'qemu-nbd', 'nbdkit']);
    expect(o.ioSize).toBe(o.imageSize / 2);
  });

  it('runs the three comparisons of --suite all in one alternation, each server once', () => {
    const o = parse('--suite', 'all');
    expect(o.comparisons).toEqual([...SUITES]);
    expect(o.comparisons.map((c) => c.servers[0])).toEqual(['strata', 'strata-chain64', 'strata-raid5']);
    expect(o.setups.map((s) => s.name)).toEqual(['strata', 'qemu-nbd', 'nbdkit', 'strata-chain64', 'strata-raid5']);
  });

  it('adds a --servers comparison of its own to the suites named', () => {
    const o = parse('--suite', 'raid5, chain', '--servers', 'strata,node-bare');
    expect(o.comparisons.map((c) => c.name)).toEqual(['raid5', 'chain', 'servers']);
    expect(o.comparisons[2]!.servers).toEqual(['strata', 'node-bare']);
    expect(o.setups.map((s) => s.name)).toEqual(['strata-raid5', 'qemu-nbd', 'strata-chain64', 'strata', 'node-bare']);
  });

  it('refuses unknown suites, servers and jobs, naming what there is', () => {
    expect(() => parse('--suite', 'raid6')).toThrow(/unknown suite 'raid6' \(suites: plain, chain, raid5, all\)/);
    expect(() => parse('--suite', ',')).toThrow(/--suite names none/);
    expect(() => parse('--servers', 'strata,tgt')).toThrow(/unknown server 'tgt'.*node-bare/);
    expect(() => parse('--jobs', 'randread-4k-qd16,seq')).toThrow(/unknown job 'seq'/);
    expect(() => parse('--rounds', '0')).toThrow(/--rounds must be a whole number/);
    expect(() => parse('--size', '256M', '--io-size', '512M')).toThrow(/--io-size must lie between/);
  });

  it('answers --help with the usage', () => {
    expect(parseNbdBenchArgs(['--help'])).toBe('help');
  });
});
