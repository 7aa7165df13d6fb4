import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './nbd-servers.js';
import { Qmp } from './qmp.js';

const run = promisify(execFile);

/**
 * The anchor of the hot-migration benchmark: qemu-storage-daemon serving a
 * qcow2 over NBD on 127.0.0.1, and QEMU's own active mirror of that disk
 * (`blockdev-mirror` with `copy-mode=write-blocking`) into another qcow2,
 * completed so that the export goes on from the copy.
 */
export interface StorageDaemon {
  uri: string;
  qmp: Qmp;
  stop(): Promise<void>;
}

const NODE = 'src';
const EXPORT = 'disk';

export async function startStorageDaemon(dir: string, qcow2: string): Promise<StorageDaemon> {
  const qmpPath = path.join(dir, 'qsd.qmp');
  const port = await freePort();
  const child: ChildProcess = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev', `driver=file,node-name=${NODE}-file,filename=${qcow2}`,
      '--blockdev', `driver=qcow2,node-name=${NODE},file=${NODE}-file`,
      '--nbd-server', `addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`,
      '--export', `type=nbd,id=exp0,node-name=${NODE},name=${EXPORT},writable=on`,
      '--chardev', `socket,id=qmp0,path=${qmpPath},server=on,wait=off`,
      '--monitor', 'chardev=qmp0',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let qmp: Qmp;
  try {
    qmp = await Qmp.connect(qmpPath);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`qemu-storage-daemon did not come up: ${(err as Error).message}; ${stderr.trim()}`);
  }
  return {
    uri: `nbd://127.0.0.1:${port}/${EXPORT}`,
    qmp,
    async stop() {
      await qmp.execute('quit').catch(() => undefined);
      qmp.close();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A fresh qcow2 of the image's contents (holes stay unallocated). */
export async function qcow2Of(image: string, qcow2: string): Promise<void> {
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', image, qcow2]);
}

/** Mirrors the served disk into a new qcow2 `target` and pivots the export onto it; returns when the job is gone. */
export async function mirrorAndPivot(qsd: StorageDaemon, target: string, size: number, timeoutMs: number): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', target, String(size)]);
  await qsd.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'dst', file: { driver: 'file', filename: target } });
  await qsd.qmp.execute('blockdev-mirror', { 'job-id': 'mig', device: NODE, target: 'dst', sync: 'full', 'copy-mode': 'write-blocking' });
  await qsd.qmp.waitForJob((jobs) => jobs.find((j) => j.device === 'mig')?.ready === true, timeoutMs);
  await qsd.qmp.execute('job-complete', { id: 'mig' });
  await qsd.qmp.waitForJob((jobs) => jobs.length === 0, timeoutMs);
}
