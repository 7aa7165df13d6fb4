import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cpioNewc } from '../support/guest-cpio.js';
import { scratchDir } from '../support/scratch.js';

const busybox = '/bin/busybox';
const skip = !fs.existsSync(busybox) && process.env.CI !== 'true';

describe.skipIf(skip)('the initramfs archive writer', () => {
  const scratch = scratchDir('cpio');
  afterAll(() => scratch.cleanup());

  it('writes a newc archive that an independent cpio reads back entry for entry', () => {
    const archive = path.join(scratch.dir, 'test.cpio');
    fs.writeFileSync(
      archive,
      cpioNewc([
        { kind: 'dir', path: '/dev' },
        { kind: 'chardev', path: '/dev/console', major: 5, minor: 1 },
        { kind: 'dir', path: '/etc' },
        { kind: 'symlink', path: '/etc/mtab', target: '/proc/mounts' },
        { kind: 'file', path: '/init', data: Buffer.from('#!/bin/sh\n'), executable: true },
        { kind: 'file', path: '/etc/odd', data: Buffer.from('abcde') },
        { kind: 'file', path: '/etc/empty', data: new Uint8Array() },
      ]),
    );
    const listing = execFileSync(busybox, ['cpio', '-t', '-v', '-F', archive], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((line) => {
        const f = line.trim().split(/\s+/);
        return [f[0], f[2], f.slice(5).join(' ')].join(' ');
      });
    expect(listing).toEqual([
      'drwxr-xr-x 0 dev',
      'crw------- 0 dev/console',
      'drwxr-xr-x 0 etc',
      'lrwxrwxrwx 0 etc/mtab -> /proc/mounts',
      '-rwxr-xr-x 10 init',
      '-rw-r--r-- 5 etc/odd',
      '-rw-r--r-- 0 etc/empty',
    ]);

    // Extract all but the device node (making one needs root) and compare contents.
    const out = path.join(scratch.dir, 'out');
    fs.mkdirSync(out);
    execFileSync(busybox, ['cpio', '-i', '-d', '-F', archive, 'init', 'etc/odd', 'etc/empty', 'etc/mtab'], { cwd: out, stdio: 'pipe' });
    expect(fs.readFileSync(path.join(out, 'init'), 'utf8')).toBe('#!/bin/sh\n');
    expect(fs.readFileSync(path.join(out, 'etc/odd'), 'utf8')).toBe('abcde');
    expect(fs.statSync(path.join(out, 'etc/empty')).size).toBe(0);
    expect(fs.readlinkSync(path.join(out, 'etc/mtab'))).toBe('/proc/mounts');
  });
});
