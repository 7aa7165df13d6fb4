import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** `qemu-nbd` serving one image on a Unix socket, for pushes into a QEMU export. */
export interface QemuNbd {
  uri: string;
  stop(): Promise<void>;
}

export async function startQemuNbd(image: string, format: 'qcow2' | 'raw', socket: string, extra: string[] = []): Promise<QemuNbd> {
  const child: ChildProcess = spawn('qemu-nbd', ['-f', format, '-t', '-k', socket, ...extra, image], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`qemu-nbd exited: ${err}`);
    if (fs.existsSync(socket) && (await reachable(socket))) break;
    if (i > 200) throw new Error(`qemu-nbd did not listen on ${socket}: ${err}`);
    await sleep(25);
  }
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

function reachable(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
