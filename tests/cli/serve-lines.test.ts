import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli, repo } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-serve-lines');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
const cli = path.join(repo, 'dist/bin/strata.js');
const dir = scratch.dir;

interface Served {
  lines: string[];
  stderr: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** `strata serve ARGS`, once it has printed `count` lines on stdout. */
async function serve(args: string[], count: number): Promise<Served> {
  const child = spawn(process.execPath, [cli, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line);
      if (lines.length === count) resolve();
    });
    void exited.then((code) => reject(new Error(`strata serve exited with ${code}: ${err}`)));
  });
  return {
    lines,
    stderr: () => err,
    stop: async (signal = 'SIGTERM') => {
      child.kill(signal);
      const code = await exited;
      if (code !== 0) throw new Error(`strata serve ended with ${code} (${child.signalCode}): ${err}`);
      return code;
    },
  };
}

/**
 * Runs a printed qemu-system line as printed (paused, no display, no default
 * devices): QEMU opens every -drive and -blockdev, connecting to the server,
 * before it greets on QMP, so the greeting means the line worked and an exit
 * before it means it did not.
 */
async function qemuAccepts(line: string): Promise<string> {
  expect(line.startsWith('qemu-system-x86_64 ')).toBe(true);
  const args = line.split(' ').slice(1);
  const child = spawn('qemu-system-x86_64', ['-S', '-display', 'none', '-nodefaults', '-qmp', 'stdio', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const result = await new Promise<string>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('{"QMP"')) resolve('ok');
    });
    child.once('exit', (code) => resolve(`qemu exited with ${code}: ${err}`));
  });
  child.kill('SIGKILL');
  return result;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${cmd} is needed for this test: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe('the lines serve prints work as printed', () => {
  it('plain TCP and Unix socket: qemu-img takes the URI, qemu-system the -drive line', async () => {
    const tcp = await serve(['--memory', '16M', '--listen', '127.0.0.1:0', '--export', 'disk'], 2);
    try {
      expect(run('qemu-img', ['info', tcp.lines[0]!])).toMatch(/virtual size: 16 MiB/);
      expect(tcp.lines[1]).toMatch(/^qemu-system-x86_64 -drive file=nbd:\/\/127\.0\.0\.1:\d+\/disk,format=raw,if=virtio$/);
      expect(await qemuAccepts(tcp.lines[1]!)).toBe('ok');
    } finally {
      expect(await tcp.stop()).toBe(0);
    }
    const unix = await serve(['--memory', '16M', '--socket', path.join(dir, 's.sock')], 2);
    try {
      expect(run('qemu-img', ['info', unix.lines[0]!])).toMatch(/virtual size: 16 MiB/);
      expect(await qemuAccepts(unix.lines[1]!)).toBe('ok');
    } finally {
      expect(await unix.stop()).toBe(0);
    }
  });

  it('TLS with a PSK: the QEMU line and the nbds:// URI carry the user and the key file', async () => {
    const keys = path.join(dir, 'psk');
    fs.mkdirSync(keys);
    const file = path.join(keys, 'keys.psk');
    fs.writeFileSync(file, `alice:${crypto.randomBytes(32).toString('hex')}\n`);
    const s = await serve(['--memory', '16M', '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-psk', file], 3);
    try {
      const [, qemu, uri] = s.lines;
      expect(uri).toMatch(new RegExp(`^nbds://alice@127\\.0\\.0\\.1:\\d+/memory\\?tls-psk-file=${file}$`));
      expect(JSON.parse(run('nbdinfo', ['--json', uri!])) as { TLS: boolean }).toMatchObject({ TLS: true });
      expect(qemu).toContain(`tls-creds-psk,id=tls0,endpoint=client,dir=${keys},username=alice`);
      expect(await qemuAccepts(qemu!)).toBe('ok');
      // The same options as --image-opts for qemu-img.
      const [, , object, , blockdev] = qemu!.split(' ');
      expect(run('qemu-img', ['info', '--object', object!, '--image-opts', blockdev!])).toMatch(/virtual size: 16 MiB/);
      expect(s.stderr()).toBe('');
    } finally {
      expect(await s.stop()).toBe(0);
    }
    // A key file QEMU cannot read under its own name leaves a placeholder, and says what goes there.
    const other = path.join(dir, 'alice.keys');
    fs.copyFileSync(file, other);
    const p = await serve(['--memory', '16M', '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-psk', other], 3);
    try {
      expect(p.lines[1]).toContain('dir=KEYDIR,username=alice');
      await expect.poll(() => p.stderr()).toMatch(/KEYDIR is a directory holding --tls-psk as keys\.psk/);
      expect(JSON.parse(run('nbdinfo', ['--json', p.lines[2]!])) as { TLS: boolean }).toMatchObject({ TLS: true });
    } finally {
      expect(await p.stop()).toBe(0);
    }
  });

  it('TLS with X.509: the QEMU line names the directory of the certificate, the nbds:// URI its CA', async () => {
    const pki = path.join(dir, 'pki');
    fs.mkdirSync(pki);
    const at = (f: string): string => path.join(pki, f);
    run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('ca-key.pem'), '-out', at('ca-cert.pem'), '-days', '2', '-subj', '/CN=Strata test CA']);
    run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('server-key.pem'), '-out', at('server.csr'), '-subj', '/CN=localhost']);
    fs.writeFileSync(at('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
    run('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca-cert.pem'), '-CAkey', at('ca-key.pem'), '-CAcreateserial', '-out', at('server-cert.pem'), '-days', '2', '-extfile', at('ext.cnf')]);
    const s = await serve(['--memory', '16M', '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-cert', at('server-cert.pem'), '--tls-key', at('server-key.pem')], 3);
    try {
      const [, qemu, uri] = s.lines;
      expect(qemu).toContain(`tls-creds-x509,id=tls0,endpoint=client,dir=${pki} `);
      expect(await qemuAccepts(qemu!)).toBe('ok');
      expect(uri).toMatch(new RegExp(`^nbds://127\\.0\\.0\\.1:\\d+/memory\\?tls-certificates=${pki}$`));
      expect(JSON.parse(run('nbdinfo', ['--json', uri!])) as { TLS: boolean }).toMatchObject({ TLS: true });
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('SIGHUP stops serve cleanly, as SIGTERM does', async () => {
    const s = await serve(['--memory', '16M', '--listen', '127.0.0.1:0'], 2);
    expect(await s.stop('SIGHUP')).toBe(0);
  });
});
