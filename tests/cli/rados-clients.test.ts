import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, startServe, tool, type ServeProcess } from '../nbd/support.js';
import { cephConf, radosPoolArgs, uniqueName } from '../support/ceph.js';
import { fioVerify } from '../support/fio-verify.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessJson } from './in-process.js';
import { buildCli } from './strata.js';

/**
 * Real NBD clients through `strata serve` on a pool whose device is in
 * Ceph: fio's random writes read back verified (from a fresh server too,
 * so from RADOS and not from anything the first one held), and an image
 * copied in and out with nbdcopy is the same byte for byte.
 */
const MiB = 1024 * 1024;
const conf = cephConf();
const tools = ['fio', 'nbdcopy', 'qemu-img'].every((t) => hasTool(t));

/** A raw image of 1 MiB runs: random data, zeroes written out, and holes, in a fixed order. */
function makeImage(file: string, runs: number): number {
  const fd = fs.openSync(file, 'w');
  let data = 0;
  try {
    for (let i = 0; i < runs; i++) {
      const kind = i % 5;
      if (kind === 1 || kind === 3) {
        fs.writeSync(fd, crypto.randomBytes(MiB), 0, MiB, i * MiB);
        data += MiB;
      } else if (kind === 4) fs.writeSync(fd, Buffer.alloc(MiB), 0, MiB, i * MiB);
      // kind 0 and 2: a hole.
    }
    fs.ftruncateSync(fd, runs * MiB);
  } finally {
    fs.closeSync(fd);
  }
  return data;
}

describe.skipIf(conf === undefined || !tools)('real clients through strata serve on a RADOS pool', () => {
  const { dir, cleanup } = scratchDir('rados-clients');
  const home = path.join(dir, 'h');
  const pool = uniqueName('clients');
  let srv: ServeProcess | undefined;
  const serve = async (): Promise<ServeProcess> => (srv = await startServe(['--home', home, pool, '--listen', '127.0.0.1:0']));
  const uri = (name: string): string => `nbd://${new URL(srv!.uri).host}/${name}`;

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', pool, ...radosPoolArgs(conf!), '--size', '1G']);
    await inProcess(home, ['volume', 'create', `${pool}/fio`, '320M']);
    await inProcess(home, ['volume', 'create', `${pool}/copy`, '160M']);
    await serve();
  }, 120_000);
  afterAll(async () => {
    await srv?.stop();
    // Its objects live in the shared Ceph pool: they go with the pool.
    await inProcess(home, ['pool', 'delete', pool, '--force']).catch(() => undefined);
    cleanup();
  });

  it('fio random writes of 4K and 64K at depth 16 on two connections read back verified, again from a fresh server, and the pool checks clean', async () => {
    const job = { uri: uri('fio'), size: 128 * MiB, numjobs: 2, bssplit: '4k/50:64k/50', iodepth: 16 };
    await fioVerify(job);
    expect(await srv!.stop()).toBe(0);
    await serve();
    await fioVerify({ ...job, uri: uri('fio'), verifyOnly: true });
    expect((await inProcessJson<{ problems: unknown[] }>(home, ['pool', 'check', pool])).problems).toEqual([]);
  }, 600_000);

  it('nbdcopy into a volume and back out gives the image byte for byte, and the holes and zeroes take no space', async () => {
    const image = path.join(dir, 'image.raw');
    const back = path.join(dir, 'back.raw');
    const data = makeImage(image, 160);
    await tool('nbdcopy', [image, uri('copy')], 300_000);
    await tool('nbdcopy', [uri('copy'), back], 300_000);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, back]);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, uri('copy')], 300_000);
    const info = await inProcessJson<{ allocatedBytes: number }>(home, ['volume', 'info', `${pool}/copy`]);
    expect(info.allocatedBytes).toBe(data);
  }, 600_000);
});
