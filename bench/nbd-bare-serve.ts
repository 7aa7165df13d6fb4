import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { bareServer } from './nbd-bare.js';

/**
 * `node dist/bench/nbd-bare-serve.js FILE [--export NAME] [--listen HOST:PORT]`:
 * serves FILE with the bare NBD server and prints its nbd:// URI on stdout,
 * as `strata serve` does, until SIGTERM or SIGINT.
 */
const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { export: { type: 'string', default: 'disk' }, listen: { type: 'string', default: '127.0.0.1:0' } },
  allowPositionals: true,
  strict: true,
});
const file = positionals[0];
const m = /^(.+):(\d+)$/.exec(values.listen);
if (positionals.length !== 1 || !file || !m) {
  process.stderr.write('usage: nbd-bare-serve FILE [--export NAME] [--listen HOST:PORT]\n');
  process.exit(2);
}
const fd = fs.openSync(file, 'r+');
const server = bareServer({ name: values.export, fd, size: fs.fstatSync(fd).size });
server.listen(Number(m[2]), m[1], () => {
  const addr = server.address();
  if (typeof addr === 'object' && addr) process.stdout.write(`nbd://${m[1]}:${addr.port}/${encodeURIComponent(values.export)}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => process.exit(0));
