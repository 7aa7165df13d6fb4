import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../support/scratch.js';
import { hasTool, parseFio, startServe, tool, type ServeProcess } from './support.js';

const scratch = scratchDir('nbd-fio');
const haveFio = hasTool('fio');

describe.skipIf(!haveFio)('fio with the nbd engine against strata serve --file', () => {
  let s: ServeProcess;
  const file = path.join(scratch.dir, 'fio.raw');

  beforeAll(async () => {
    fs.writeFileSync(file, Buffer.alloc(0));
    fs.truncateSync(file, 128 * 1024 * 1024);
    s = await startServe(['--file', file, '--listen', '127.0.0.1:0', '--export', 'disk']);
  });

  afterAll(async () => {
    expect(await s?.stop('SIGINT')).toBe(0);
    scratch.cleanup();
  });

  it('random 4K writes at queue depth 16 verify with crc32c', async () => {
    const out = await tool('fio', [
      '--name=randwrite-verify', '--ioengine=nbd', `--uri=${s.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      '--size=32M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
    ]);
    const [job] = parseFio(out);
    expect(job!.error).toBe(0);
    expect(job!.write.io_bytes).toBe(32 * 1024 * 1024);
    expect(job!.read.io_bytes).toBe(32 * 1024 * 1024);
  });

  it('two jobs on two connections write disjoint ranges with mixed sizes and both verify', async () => {
    const out = await tool('fio', [
      '--name=pair', '--ioengine=nbd', `--uri=${s.uri}`, '--rw=randwrite', '--bsrange=4k-256k', '--iodepth=8',
      '--numjobs=2', '--size=16M', '--offset_increment=32M', '--offset=64M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
    ]);
    const jobs = parseFio(out);
    expect(jobs.length).toBe(2);
    for (const j of jobs) expect(j.error).toBe(0);
  });
});
