import { execFile, execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { hasTool, startServe, STRATA } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';

const run = promisify(execFile);
const scratch = scratchDir('cli-libvirt');
const home = path.join(scratch.dir, 'home');
afterAll(() => scratch.cleanup());

async function strata(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [STRATA, '--home', home, ...args], { timeout: 30_000 });
  return stdout;
}

/** An element as a real XML parser (Python's) reads it: tag, attributes, children. */
interface Element {
  tag: string;
  attrib: Record<string, string>;
  children: Element[];
}

const PARSE = `
import json, sys, xml.etree.ElementTree as ET
def conv(e): return {"tag": e.tag, "attrib": e.attrib, "children": [conv(c) for c in e]}
print(json.dumps(conv(ET.fromstring(sys.stdin.read()))))
`;

function parseXml(xml: string): Element {
  return JSON.parse(execFileSync('python3', ['-c', PARSE], { input: xml }).toString()) as Element;
}

function child(e: Element, tag: string): Element {
  const c = e.children.find((x) => x.tag === tag);
  if (!c) throw new Error(`<${e.tag}> has no <${tag}>`);
  return c;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

// Python's XML parser is the independent reader (python3 is on every CI image; in CI a missing one fails).
describe.skipIf(!hasTool('python3'))('volume info --libvirt', () => {
  beforeAll(async () => {
    await strata('pool', 'create', 'p0', '--size', '64M', '--path', path.join(scratch.dir, 'p0.pool'));
    await strata('volume', 'create', 'p0/vm1', '16M');
  });

  it('prints a <disk type=network> element that parses, and whose host, port and name reach the served volume', async () => {
    const port = await freePort();
    const xml = await strata('volume', 'info', 'p0/vm1', '--libvirt', '--listen', `127.0.0.1:${port}`, '--target', 'vdc');
    const disk = parseXml(xml);
    expect(disk.tag).toBe('disk');
    expect(disk.attrib).toEqual({ type: 'network', device: 'disk' });
    expect(child(disk, 'driver').attrib).toMatchObject({ name: 'qemu', type: 'raw' });
    const source = child(disk, 'source');
    expect(source.attrib).toEqual({ protocol: 'nbd', name: 'vm1' });
    const host = child(source, 'host');
    expect(child(disk, 'target').attrib).toEqual({ dev: 'vdc', bus: 'virtio' });

    const s = await startServe(['--home', home, 'p0', '--listen', `127.0.0.1:${port}`]);
    try {
      const c = await NbdClient.connect({ host: host.attrib.name!, port: Number(host.attrib.port), export: source.attrib.name! });
      expect(c.size).toBe(16 * 1024 * 1024);
      await c.disconnect();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('on a served pool, takes the address, port and export name from the server', async () => {
    const s = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0']);
    try {
      const served = new URL(s.uri);
      const source = child(parseXml(await strata('volume', 'info', 'p0/vm1', '--libvirt')), 'source');
      expect(child(source, 'host').attrib).toEqual({ name: '127.0.0.1', port: served.port });
      const c = await NbdClient.connect({ host: '127.0.0.1', port: Number(served.port), export: source.attrib.name! });
      expect(c.size).toBe(16 * 1024 * 1024);
      await c.disconnect();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('names a Unix socket and TLS when asked, escapes what XML needs, and refuses a bad target in one line', async () => {
    const sock = path.join(scratch.dir, "a&b'.sock");
    const disk = parseXml(await strata('volume', 'info', 'p0/vm1', '--libvirt', '--socket', sock, '--tls', '--export', 'p0/vm1'));
    const source = child(disk, 'source');
    expect(source.attrib).toEqual({ protocol: 'nbd', name: 'p0/vm1', tls: 'yes' });
    expect(child(source, 'host').attrib).toEqual({ transport: 'unix', socket: sock });
    expect(child(disk, 'target').attrib.dev).toBe('vdb');
    const json = JSON.parse(await strata('--json', 'volume', 'info', 'p0/vm1', '--libvirt')) as { libvirt: string };
    expect(parseXml(json.libvirt).tag).toBe('disk');
    const err = await strata('volume', 'info', 'p0/vm1', '--libvirt', '--target', 'sda').then(
      () => '',
      (e: { stderr: string }) => e.stderr,
    );
    expect(err).toBe("strata: 'sda' is not a virtio disk name (vda, vdb, …)\n");
  });
});
