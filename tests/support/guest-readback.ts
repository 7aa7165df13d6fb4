import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { sha256 } from './guest-payload.js';

const run = promisify(execFile);

export interface Readback {
  /** e2fsck -fn's exit status on the copy (0: clean). */
  fsckExit: number;
  fsckOutput: string;
  /** name (relative to /data) → sha256 of the file as the host's debugfs reads it. */
  sums: Map<string, string>;
}

/**
 * The host's own look at the disk, with tools the guest did not use: copy the
 * export with nbdcopy, check it with the host's e2fsck and pull /data out with
 * debugfs. Independent of the server's on-disk format.
 */
export async function readBack(uri: string, workDir: string): Promise<Readback> {
  const copy = path.join(workDir, 'readback.raw');
  const out = path.join(workDir, 'readback');
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  await run('nbdcopy', [uri, copy]);
  let fsckExit = 0;
  let fsckOutput = '';
  try {
    const r = await run('e2fsck', ['-fn', copy]);
    fsckOutput = r.stdout + r.stderr;
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    fsckExit = typeof e.code === 'number' ? e.code : -1;
    fsckOutput = `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
  await run('debugfs', ['-R', `rdump /data ${out}`, copy]);
  const sums = new Map<string, string>();
  const root = path.join(out, 'data');
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else sums.set(path.relative(root, p), sha256(fs.readFileSync(p)));
    }
  };
  if (fs.existsSync(root)) walk(root);
  fs.rmSync(copy, { force: true });
  fs.rmSync(out, { recursive: true, force: true });
  return { fsckExit, fsckOutput, sums };
}

/** Where a file's block lies on the disk, found with the host's debugfs on a copy of the export. */
export async function diskOffsetOf(uri: string, workDir: string, file: string, fileBlock: number): Promise<number> {
  const copy = path.join(workDir, 'locate.raw');
  try {
    await run('nbdcopy', [uri, copy]);
    const { stdout } = await run('debugfs', ['-R', `bmap ${file} ${fileBlock}`, copy]);
    const block = Number(stdout.trim());
    if (!Number.isSafeInteger(block) || block <= 0) throw new Error(`debugfs bmap ${file} ${fileBlock} said '${stdout.trim()}'`);
    const { stdout: stats } = await run('dumpe2fs', ['-h', copy]);
    const blockSize = Number(/Block size:\s*(\d+)/.exec(stats)?.[1]);
    return block * blockSize;
  } finally {
    fs.rmSync(copy, { force: true });
  }
}
