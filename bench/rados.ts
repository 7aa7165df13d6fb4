/**
 * The RADOS benchmark (`npm run bench:rados`, options: --help): fio against
 * Strata serving a volume of a pool on Ceph RADOS, against Strata's NBD
 * server on the bare RADOS device, and against fio's own rbd engine (the
 * anchor) and rbd-nbd where the kernel has nbd; on a one-host cluster of its
 * own unless --ceph-conf names one. Markdown on stdout, every sample in a
 * JSON file.
 */
import { withInterrupt } from '../bin/interrupt-signal.js';
import { benchMain } from './bench-main.js';
import { parseRadosBenchArgs, USAGE } from './rados-options.js';
import { radosMarkdown } from './rados-report.js';
import { runRadosBench } from './rados-run.js';

export function main(argv: string[]): Promise<number> {
  return benchMain(
    {
      name: 'bench:rados',
      usage: USAGE,
      parse: parseRadosBenchArgs,
      // Ctrl-C ends the run through its cleanup: servers stopped, images removed, an own cluster stopped.
      run: (o, log) => withInterrupt((signal) => runRadosBench(o, log, signal)),
      markdown: radosMarkdown,
    },
    argv,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main(process.argv.slice(2));
