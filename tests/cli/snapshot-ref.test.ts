import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatChainTree } from '../../bin/chain-tree.js';
import { parseRequest } from '../../src/host/control-protocol.js';
import { onePool, parseSnapshotRef, parseSourceRef, parseTemplateRef } from '../../src/host/snapshot-ref.js';
import type { ChainNode } from '../../src/snapshot/index.js';

describe('snapshot, clone and template names', () => {
  it('splits POOL/VOL@SNAP and says which part is wrong', () => {
    expect(parseSnapshotRef('pool0/vm1@pre-upgrade')).toEqual({ pool: 'pool0', volume: 'vm1', snapshot: 'pre-upgrade' });
    expect(() => parseSnapshotRef('pool0/vm1')).toThrow("'pool0/vm1' names no snapshot (expected POOL/VOL@SNAP, e.g. pool0/vm1@before-upgrade)");
    expect(() => parseSnapshotRef('pool0/vm1@')).toThrow("invalid snapshot name ''");
    expect(() => parseSnapshotRef('pool0/vm1@a@b')).toThrow("invalid snapshot 'pool0/vm1@a@b' (one '@' between the volume and the snapshot name)");
    expect(() => parseSnapshotRef('vm1@s')).toThrow("invalid snapshot 'vm1@s' (expected POOL/VOL@SNAP");
    expect(() => parseSnapshotRef('p/a/b@s')).toThrow("invalid snapshot 'p/a/b@s'");
    expect(() => parseSnapshotRef('p/..@s')).toThrow("invalid volume name '..'");
    expect(() => parseSnapshotRef('p/vm1@../x')).toThrow("invalid snapshot name '../x'");
    expect(() => parseSnapshotRef('p/vm1@' + 'a'.repeat(65))).toThrow('invalid snapshot name');
  });

  it('tells a snapshot source from a named one, and checks template names', () => {
    expect(parseSourceRef('p/vm1@s')).toEqual({ pool: 'p', snapshot: { volume: 'vm1', snapshot: 's' } });
    expect(parseSourceRef('p/gold')).toEqual({ pool: 'p', name: 'gold' });
    expect(parseTemplateRef('p/gold')).toEqual({ pool: 'p', template: 'gold' });
    expect(() => parseTemplateRef('p/vm1@s')).toThrow("'p/vm1@s' names a snapshot; this command takes POOL/TEMPLATE");
    expect(() => parseTemplateRef('gold')).toThrow("invalid template 'gold' (expected POOL/TEMPLATE, e.g. pool0/ubuntu-tmpl)");
    expect(() => parseTemplateRef('p/-x')).toThrow("invalid template name '-x'");
    expect(onePool([{ pool: 'p' }, { pool: 'p' }], 'x')).toBe('p');
    expect(() => onePool([{ pool: 'p' }, { pool: 'q' }], 'the snapshots of a group')).toThrow("the snapshots of a group must be in one pool (got 'p', 'q')");
  });

  it('reads back every valid POOL/VOL@SNAP it is given', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
    fc.assert(
      fc.property(name, name, name, (pool, volume, snapshot) => {
        expect(parseSnapshotRef(`${pool}/${volume}@${snapshot}`)).toEqual({ pool, volume, snapshot });
      }),
    );
  });
});

describe('chain requests on the control socket', () => {
  it('are checked field by field', () => {
    expect(parseRequest(JSON.stringify({ op: 'snapshot-create', refs: [{ volume: 'a', snapshot: 's' }], full: true }))).toEqual({ op: 'snapshot-create', refs: [{ volume: 'a', snapshot: 's' }], full: true });
    expect(parseRequest(JSON.stringify({ op: 'snapshot-delete', volume: 'a', snapshot: 's', rate: 1024 }))).toEqual({ op: 'snapshot-delete', volume: 'a', snapshot: 's', rate: 1024, force: false });
    expect(parseRequest(JSON.stringify({ op: 'clone', source: { template: 'gold' }, name: 'c' }))).toEqual({ op: 'clone', source: { template: 'gold' }, name: 'c', full: false });
    expect(parseRequest(JSON.stringify({ op: 'template-list' }))).toEqual({ op: 'template-list' });
    const bad: Array<[unknown, RegExp]> = [
      [{ op: 'snapshot-create', refs: [] }, /needs 'refs'/],
      [{ op: 'snapshot-create', refs: [{ volume: '../x', snapshot: 's' }] }, /needs 'volume'/],
      [{ op: 'snapshot-create', refs: ['a@s'] }, /snapshot references/],
      [{ op: 'snapshot-delete', volume: 'a', snapshot: 's', rate: -1 }, /'rate' must be/],
      [{ op: 'snapshot-delete', volume: 'a', snapshot: 's', rate: 0 }, /'rate' must be/],
      [{ op: 'snapshot-revert', volume: 'a', snapshot: 's', force: 'yes' }, /force/],
      [{ op: 'clone', source: null, name: 'c' }, /needs 'source'/],
      [{ op: 'clone', source: { template: 'gold' }, name: 'a/b' }, /needs 'name'/],
      [{ op: 'template-info' }, /needs 'template'/],
      [{ op: 'volume-flatten', volume: 7 }, /needs 'volume'/],
    ];
    for (const [req, why] of bad) expect(() => parseRequest(JSON.stringify(req)), JSON.stringify(req)).toThrow(why);
  });
});

describe('snapshot list', () => {
  it('draws the chain as a tree, oldest first, with kind, time and exclusive bytes', () => {
    const node = (kind: ChainNode['kind'], name: string, exclusiveBytes: number, children: ChainNode[] = []): ChainNode => ({ kind, name, layer: 0, created: '2026-12-01T10:00:00.000Z', exclusiveBytes, children });
    const tree = node('snapshot', 'vm1@s1', 64 << 20, [node('snapshot', 'vm1@s2', 4 << 20, [node('volume', 'vm1', 1 << 20)]), node('volume', 'vm2', 0)]);
    expect(formatChainTree(tree)).toBe(
      [
        'NAME       KIND      CREATED              EXCLUSIVE',
        'vm1@s1     snapshot  2026-12-01 10:00:00        64M',
        '├─ vm1@s2  snapshot  2026-12-01 10:00:00         4M',
        '│  └─ vm1  volume    2026-12-01 10:00:00         1M',
        '└─ vm2     volume    2026-12-01 10:00:00          0',
        '',
      ].join('\n'),
    );
  });
});
