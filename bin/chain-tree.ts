import type { ChainNode } from '../src/snapshot/index.js';
import { formatTable } from './output.js';
import { formatSize } from './size.js';

interface Row {
  name: string;
  node: ChainNode;
}

/**
 * The chain a volume belongs to as `snapshot list` draws it: one line per
 * layer, oldest first, children indented under their parent with box lines
 * (as `tree` draws a directory), and for each its kind, creation time and
 * the bytes it alone holds.
 */
export function formatChainTree(root: ChainNode): string {
  const rows: Row[] = [];
  const walk = (node: ChainNode, lead: string, branch: string): void => {
    rows.push({ name: branch + node.name, node });
    node.children.forEach((c, i) => {
      const last = i === node.children.length - 1;
      walk(c, lead + (last ? '   ' : '│  '), lead + (last ? '└─ ' : '├─ '));
    });
  };
  walk(root, '', '');
  return formatTable(rows, [
    { header: 'NAME', value: (r) => r.name },
    { header: 'KIND', value: (r) => r.node.kind },
    // UTC to the second; --json has the full ISO time.
    { header: 'CREATED', value: (r) => r.node.created.replace('T', ' ').slice(0, 19) },
    { header: 'EXCLUSIVE', value: (r) => formatSize(r.node.exclusiveBytes), align: 'right' },
  ]);
}
