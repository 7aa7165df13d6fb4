import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInfo } from '../../src/snapshot/index.js';
import { hasTool, STRATA } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { convertDisk, rawDisk, tarOva, writeOvfDir, type VmSpec } from '../support/template-packages.js';
import { buildCli } from './strata.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';

/**
 * `strata template import` from http:// and https:// URLs served by local
 * servers in this process: an OVA read once front to back, an OVF whose disks are
 * fetched beside it, a server that drops the connection half-way and one
 * that stalls (each refused naming the problem, nothing left behind), and
 * the importing process's peak RSS staying well under the size of a
 * package four times the pool's cache budget.
 */
const MiB = 1 << 20;
const tools = ['qemu-img', 'tar', 'sha256sum', 'openssl'].every(hasTool);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Peak resident set of the process (VmHWM), in bytes, as last seen before it exited. */
  peakRss: number;
}

/** Runs the CLI without blocking this process (it serves the downloads), watching its peak memory; `onStart` gets its pid. */
function strataAsync(home: string, args: string[], onStart?: (pid: number) => void, env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [STRATA, '--home', home, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  let peakRss = 0;
  if (child.pid !== undefined) onStart?.(child.pid);
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const watch = setInterval(() => {
    try {
      const kb = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1];
      if (kb !== undefined) peakRss = Math.max(peakRss, Number(kb) * 1024);
    } catch {
      // Gone already.
    }
  }, 20);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearInterval(watch);
      resolve({ code, stdout, stderr, peakRss });
    });
  });
}

describe.skipIf(!tools)('template import over HTTP', () => {
  const scratch = scratchDir('template-http');
  const dir = scratch.dir;
  const home = path.join(dir, 'home');
  const site = path.join(dir, 'site');
  let server: http.Server;
  let tls: https.Server;
  let base = '';
  let tlsBase = '';
  /** Called when the slow route has sent all it will send. */
  let slowSent: () => void = () => undefined;
  const vm: VmSpec = { name: 'web', cpus: 4, memoryMiB: 4096, network: 'LAN', disks: [{ href: 'disk1.vmdk', capacity: 32 * MiB, format: 'vmdk-stream' }] };

  const nothingLeft = async (): Promise<void> => {
    expect(await inProcessJson<unknown[]>(home, ['volume', 'list', 'p'])).toEqual([]);
    expect(await inProcessJson<unknown[]>(home, ['template', 'list', 'p'])).toEqual([]);
  };

  beforeAll(async () => {
    buildCli();
    fs.mkdirSync(path.join(site, 'ovf'), { recursive: true });
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G', '--path', path.join(dir, 'p.pool')]);
    rawDisk(path.join(dir, 'd1.raw'), 32 * MiB, [0, 5 * MiB, 31 * MiB]);
    convertDisk(path.join(dir, 'd1.raw'), path.join(site, 'ovf', 'disk1.vmdk'), 'vmdk-stream');
    writeOvfDir(path.join(site, 'ovf'), vm);
    tarOva(path.join(site, 'ovf'), vm, path.join(site, 'web.ova'));
    // The big one: a raw disk four times the pool's 64 MiB cache budget, 1 MiB of data every 16 MiB.
    const big: VmSpec = { ...vm, name: 'big', disks: [{ href: 'big.img', capacity: 256 * MiB, format: 'raw' }] };
    const bigDir = path.join(dir, 'big');
    fs.mkdirSync(bigDir);
    rawDisk(path.join(bigDir, 'big.img'), 256 * MiB, Array.from({ length: 16 }, (_, i) => i * 16 * MiB));
    writeOvfDir(bigDir, big);
    tarOva(bigDir, big, path.join(site, 'big.ova'));
    fs.rmSync(bigDir, { recursive: true });

    const handler: http.RequestListener = (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const [, mode, ...rest] = url.pathname.split('/');
      const file = path.join(site, ...(mode === 'drop' || mode === 'slow' ? rest : [mode!, ...rest]));
      if (!file.startsWith(site) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
        res.writeHead(404);
        return res.end();
      }
      const size = fs.statSync(file).size;
      res.writeHead(200, { 'content-length': size });
      const body = fs.createReadStream(file, mode === 'drop' || mode === 'slow' ? { end: Math.floor(size / 2) } : {});
      if (mode === 'drop') body.on('end', () => res.socket?.destroy());
      else if (mode === 'slow') body.on('end', () => slowSent());
      body.pipe(res, { end: mode !== 'drop' && mode !== 'slow' });
    };
    server = http.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // A self-signed certificate for 127.0.0.1: trusted by the CLI only through NODE_EXTRA_CA_CERTS.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' });
    tls = https.createServer({ key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) }, handler);
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    tlsBase = `https://127.0.0.1:${(tls.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const srv of [server, tls]) {
      srv.closeAllConnections();
      await new Promise((resolve) => srv.close(resolve));
    }
    scratch.cleanup();
  });

  it('imports an OVA and an OVF (its disk fetched beside the descriptor) from URLs', async () => {
    const r = await inProcessJson<{ templates: TemplateInfo[]; disks: Array<{ dataBytes: number }> }>(home, ['template', 'import', `${base}/web.ova`, 'p/a']);
    expect(r.templates.map((t) => [t.name, t.size])).toEqual([['a', 32 * MiB]]);
    expect(r.templates[0]!.settings).toMatchObject({ name: 'web', cpus: 4, memoryBytes: 4096 * MiB, networks: [{ name: 'LAN' }] });
    expect(r.disks[0]!.dataBytes).toBe(3 * MiB);
    const b = await inProcess(home, ['template', 'import', `${base}/ovf/web.ovf`, 'p/b']);
    expect(b).toMatch(/^imported .*web\.ovf as template p\/b\n {2}p\/b: 32M from disk1\.vmdk \(vmdk streamOptimized\), 3M of data$/m);
    for (const t of ['a', 'b']) await inProcess(home, ['template', 'delete', `p/${t}`]);
  });

  it('imports over https, and refuses a server whose certificate is not trusted', async () => {
    const r = await strataAsync(home, ['template', 'import', `${tlsBase}/web.ova`, 'p/t'], undefined, { NODE_EXTRA_CA_CERTS: path.join(dir, 'cert.pem') });
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(/^ {2}p\/t: 32M from disk1\.vmdk \(vmdk streamOptimized\), 3M of data$/m);
    await inProcess(home, ['template', 'delete', 'p/t']);
    expect(await inProcessFails(home, ['template', 'import', `${tlsBase}/web.ova`, 'p/u'])).toMatch(new RegExp(`^download of ${tlsBase}/web\\.ova failed: self[- ]signed certificate`));
    await nothingLeft();
  });

  it('says where a dropped download ended, and fails a stalled one, leaving nothing behind', async () => {
    const size = fs.statSync(path.join(site, 'web.ova')).size;
    // One through the built CLI: exit 1, one line.
    const drop = await strataAsync(home, ['template', 'import', `${base}/drop/web.ova`, 'p/d']);
    expect(drop.code).toBe(1);
    expect(drop.stderr).toMatch(new RegExp(`^strata: download of ${base}/drop/web\\.ova ended at \\d+ of ${size} bytes[^\\n]*\\n$`));
    expect(await inProcessFails(home, ['template', 'import', `${base}/slow/web.ova`, 'p/s', '--stall-timeout', '0.5'])).toMatch(new RegExp(`^download of ${base}/slow/web\\.ova stalled at \\d+ of ${size} bytes: nothing came for 0\\.5 s`));
    expect(await inProcessFails(home, ['template', 'import', `${base}/nothing.ova`, 'p/m'])).toBe(`download of ${base}/nothing.ova refused: HTTP 404 Not Found`);
    await nothingLeft();
  });

  it('stops at Ctrl-C in the middle of a download, leaving nothing behind', async () => {
    let pid = 0;
    const stalled = new Promise<void>((resolve) => (slowSent = resolve));
    const run = strataAsync(home, ['template', 'import', `${base}/slow/web.ova`, 'p/i'], (p) => (pid = p));
    // Half the package is sent and the import waits for the rest: the moment a user gives up.
    await stalled;
    await new Promise((resolve) => setTimeout(resolve, 300));
    process.kill(pid, 'SIGINT');
    const r = await run;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^strata: .*interrupted/);
    await nothingLeft();
  });

  it('streams: a package four times the cache budget imports with the peak memory well under its size', async () => {
    const size = fs.statSync(path.join(site, 'big.ova')).size;
    const r = await strataAsync(home, ['--json', 'template', 'import', `${base}/big.ova`, 'p/big']);
    expect(r.stderr).toBe('');
    expect((JSON.parse(r.stdout) as { disks: Array<{ dataBytes: number }> }).disks[0]!.dataBytes).toBe(16 * MiB);
    expect(r.peakRss).toBeGreaterThan(0);
    // Node itself takes some 60-100 MiB; holding the package would take its 256 MiB more.
    expect(r.peakRss, `peak RSS ${r.peakRss} for a ${size}-byte package`).toBeLessThan(size * 0.75);
  });
});
