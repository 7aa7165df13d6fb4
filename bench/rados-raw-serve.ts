import { parseArgs } from 'node:util';
import { RadosCluster, RadosDevice } from '../src/blockdev/rados/index.js';
import { NbdServer, nbdUri, StaticExportSource } from '../src/nbd/index.js';

/**
 * `node dist/bench/rados-raw-serve.js --conf FILE [--id CLIENT] --pool CEPHPOOL
 * --name NAME --size BYTES [--export NAME] [--listen HOST:PORT]`: makes a
 * fresh RADOS device NAME in CEPHPOOL, serves it with Strata's NBD server and
 * no pool format above it, and prints its nbd:// URI on stdout as `strata
 * serve` does. On SIGTERM or SIGINT it stops serving and removes the device's
 * objects: it made them, and a cluster that outlives the benchmark keeps no
 * leftovers. It is the RADOS benchmark's second Strata line, what the pool
 * format costs on top of the device (bench/rados-setups.ts).
 */
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    conf: { type: 'string' },
    id: { type: 'string', default: 'admin' },
    pool: { type: 'string' },
    name: { type: 'string' },
    size: { type: 'string' },
    export: { type: 'string', default: 'disk' },
    listen: { type: 'string', default: '127.0.0.1:0' },
  },
  strict: true,
});
const m = /^(.+):(\d+)$/.exec(values.listen);
const size = Number(values.size);
if (!values.conf || !values.pool || !values.name || !Number.isSafeInteger(size) || size <= 0 || !m) {
  process.stderr.write('usage: rados-raw-serve --conf FILE [--id CLIENT] --pool CEPHPOOL --name NAME --size BYTES [--export NAME] [--listen HOST:PORT]\n');
  process.exit(2);
}
const { conf, pool, name } = values;

// Listened for first: a benchmark that stops the server as soon as it reads the URI must still get the objects removed.
const stopped = new Promise<void>((resolve) => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve());
});
const cluster = await RadosCluster.connect({ conf, id: values.id });
const io = await cluster.ioctx(pool);
const device = await RadosDevice.create(io, name, size);
try {
  const source = new StaticExportSource([
    { name: values.export, description: `RADOS device ${pool}/${name}`, readOnly: false, open: async () => device, release: async () => undefined },
  ]);
  const server = new NbdServer({ source, log: (msg) => process.stderr.write(`rados-raw-serve: ${msg}\n`) });
  const bound = await server.listen({ host: m[1]!, port: Number(m[2]) });
  process.stdout.write(`${nbdUri(bound, values.export)}\n`);
  await stopped;
  await server.close();
  await device.flush();
} finally {
  await device.close();
  await RadosDevice.destroy(io, name);
  io.close();
  await cluster.close();
}
