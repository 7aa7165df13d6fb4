import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpSource, relativeUrl } from '../../src/host/http-source.js';

/** A local server whose routes say how each download behaves. */
let server: http.Server;
let base: string;
const body = Buffer.alloc(3 * 1024 * 1024);
for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE(i, i);

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    if (path === '/plain') {
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    } else if (path === '/hop') {
      res.writeHead(302, { location: '/plain' });
      res.end();
    } else if (path === '/loop') {
      res.writeHead(301, { location: '/loop' });
      res.end();
    } else if (path === '/drop') {
      // Half the promised bytes, then the connection goes.
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, body.length / 2), () => res.socket?.destroy());
    } else if (path === '/slow') {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 1024));
      // Never more: the stall timer must end it.
    } else {
      res.writeHead(404, 'Not Found');
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

async function readAll(url: string, stallMs?: number): Promise<Buffer> {
  const src = await httpSource(url, stallMs === undefined ? {} : { stallMs });
  try {
    const parts: Buffer[] = [];
    for (let at = 0; ; ) {
      const b = await src.read(at, 1024 * 1024);
      if (b.length === 0) break;
      parts.push(b);
      at += b.length;
    }
    return Buffer.concat(parts);
  } finally {
    await src.close();
  }
}

describe('http source', () => {
  it('reads a download front to back, sized by Content-Length, and follows a redirect', async () => {
    const src = await httpSource(`${base}/hop`);
    expect(src.size).toBe(body.length);
    expect(src.seekable).toBe(false);
    expect(src.name).toBe(`${base}/plain`);
    await src.close();
    expect((await readAll(`${base}/hop`)).equals(body)).toBe(true);
  });

  it('refuses a non-2xx status naming it, and a redirect loop', async () => {
    await expect(httpSource(`${base}/missing`)).rejects.toThrow(`download of ${base}/missing refused: HTTP 404 Not Found`);
    await expect(httpSource(`${base}/loop`)).rejects.toThrow('more than 5 redirects');
  });

  it('says where a dropped download ended', async () => {
    await expect(readAll(`${base}/drop`)).rejects.toThrow(new RegExp(`download of ${base}/drop ended at \\d+ of ${body.length} bytes`));
  });

  it('fails a download that stalls', async () => {
    await expect(readAll(`${base}/slow`, 300)).rejects.toThrow(`download of ${base}/slow stalled at 1024 of ${body.length} bytes`);
  });

  it('resolves hrefs inside the descriptor folder only', () => {
    const ovf = 'http://h:1/pkgs/app/app.ovf';
    expect(relativeUrl(ovf, 'disk1.vmdk')).toBe('http://h:1/pkgs/app/disk1.vmdk');
    expect(relativeUrl(ovf, 'disks/d%201.vmdk')).toBe('http://h:1/pkgs/app/disks/d%201.vmdk');
    for (const bad of ['../other.vmdk', 'disks/../../x', '/etc/passwd', 'http://evil/x', 'file:///etc/passwd', '%2e%2e/x', 'd.vmdk?x=1', '']) expect(() => relativeUrl(ovf, bad), bad).toThrow('leaves the package');
  });
});
