import { describe, expect, it } from 'vitest';
import { formatFields, formatTable } from '../../bin/output.js';

describe('human output', () => {
  it('aligns table columns, numbers to the right, with no trailing blanks', () => {
    const rows = [
      { name: 'pool0', size: '100G', path: '/a' },
      { name: 'long-pool-name', size: '4K', path: '/bb/cc' },
    ];
    const text = formatTable(rows, [
      { header: 'NAME', value: (r) => r.name },
      { header: 'SIZE', value: (r) => r.size, align: 'right' },
      { header: 'PATH', value: (r) => r.path },
    ]);
    expect(text).toBe(['NAME            SIZE  PATH', 'pool0           100G  /a', 'long-pool-name    4K  /bb/cc', ''].join('\n'));
  });

  it('aligns key: value fields', () => {
    expect(formatFields([['name', 'p0'], ['cluster size', '64K'], ['empty', '']])).toBe('name:         p0\ncluster size: 64K\nempty:\n');
  });
});
