import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { loadTls, NbdClient } from '../../src/nbd/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';
import * as K from '../../src/nbd/constants.js';
import { hasTool, RawPeer, serveDevices, startServe, tool, type ServeProcess } from './support.js';
import { greet, option, optReply } from './wire.js';

const scratch = scratchDir('nbd-tls');
const dir = scratch.dir;
const haveTools = hasTool('openssl') && hasTool('qemu-img') && hasTool('nbdinfo');
const pki = path.join(dir, 'pki');
const clientDir = path.join(dir, 'client');
/** Also holds a client certificate, for a server started with --tls-ca. */
const certClientDir = path.join(dir, 'client-cert');
const pskFile = path.join(dir, 'keys.psk');

/** A throwaway CA and a server certificate for localhost / 127.0.0.1, as qemu's tls-creds-x509 wants them. */
async function makePki(): Promise<void> {
  fs.mkdirSync(pki);
  fs.mkdirSync(clientDir);
  const at = (f: string) => path.join(pki, f);
  await tool('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('ca-key.pem'), '-out', at('ca-cert.pem'), '-days', '2', '-subj', '/CN=Strata test CA']);
  await tool('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('server-key.pem'), '-out', at('server.csr'), '-subj', '/CN=localhost']);
  fs.writeFileSync(at('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  await tool('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca-cert.pem'), '-CAkey', at('ca-key.pem'), '-CAcreateserial', '-out', at('server-cert.pem'), '-days', '2', '-extfile', at('ext.cnf')]);
  fs.copyFileSync(at('ca-cert.pem'), path.join(clientDir, 'ca-cert.pem'));
  fs.mkdirSync(certClientDir);
  await tool('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(certClientDir, 'client-key.pem'), '-out', at('client.csr'), '-subj', '/CN=qemu client']);
  fs.writeFileSync(at('client-ext.cnf'), 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  await tool('openssl', ['x509', '-req', '-in', at('client.csr'), '-CA', at('ca-cert.pem'), '-CAkey', at('ca-key.pem'), '-CAcreateserial', '-out', path.join(certClientDir, 'client-cert.pem'), '-days', '2', '-extfile', at('client-ext.cnf')]);
  fs.copyFileSync(at('ca-cert.pem'), path.join(certClientDir, 'ca-cert.pem'));
  fs.writeFileSync(pskFile, `alice:${crypto.randomBytes(32).toString('hex')}\n`);
}

describe.skipIf(!haveTools)('TLS', () => {
  let x509: ServeProcess;
  let psk: ServeProcess;
  const disk = path.join(dir, 'disk.raw');

  beforeAll(async () => {
    await makePki();
    fs.writeFileSync(disk, pattern(4 * 1024 * 1024, 42));
    x509 = await startServe(['--file', disk, '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-cert', path.join(pki, 'server-cert.pem'), '--tls-key', path.join(pki, 'server-key.pem')]);
    psk = await startServe(['--memory', '8M', '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-psk', pskFile, '--export', 'scratch']);
  });

  afterAll(async () => {
    expect(await x509?.stop()).toBe(0);
    expect(await psk?.stop()).toBe(0);
    scratch.cleanup();
  });

  const port = (s: ServeProcess) => Number(/:(\d+)\//.exec(s.uri)![1]);

  it('qemu-img reads the export over X.509 TLS and compares it with the file', async () => {
    const creds = `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir}`;
    const opts = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port(x509)},export=disk,tls-creds=tls0`;
    const info = await tool('qemu-img', ['info', '--object', creds, '--image-opts', opts]);
    expect(info).toMatch(/virtual size: 4 MiB/);
    await tool('qemu-img', ['compare', '--object', creds, '--image-opts', `driver=raw,file.driver=file,file.locking=off,file.filename=${disk}`, opts]);
  });

  it('nbdinfo connects with nbds:// and a PSK, and writes go through', async () => {
    const uri = `nbds://alice@127.0.0.1:${port(psk)}/scratch?tls-psk-file=${pskFile}`;
    const out = await tool('nbdinfo', ['--json', uri]);
    expect((JSON.parse(out) as { TLS: boolean }).TLS).toBe(true);
    await tool('nbdcopy', [disk, uri]);
    const map = await tool('nbdinfo', ['--map', uri]);
    expect(map).toMatch(/data/);
  });

  it('refuses a plaintext client cleanly when TLS is required', async () => {
    await expect(tool('qemu-img', ['info', x509.uri])).rejects.toThrow(/TLS/);
    await expect(tool('nbdinfo', [psk.uri])).rejects.toThrow(/TLS|tls/);
    await expect(NbdClient.connect({ port: port(psk), export: 'scratch' })).rejects.toThrow(/TLS is required/);
  });

  it('drops a client that sends garbage instead of a TLS handshake, and goes on serving', async () => {
    const p = await RawPeer.connect(port(psk));
    try {
      await greet(p);
      p.send(option(K.OPT_STARTTLS, Buffer.from('x')));
      expect((await optReply(p)).type).toBe(K.REP_ERR_INVALID);
      p.send(option(K.OPT_LIST));
      expect((await optReply(p)).type).toBe(K.REP_ERR_TLS_REQD);
      p.send(option(K.OPT_STARTTLS));
      expect((await optReply(p)).type).toBe(K.REP_ACK);
      p.send(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
      await p.closedByServer();
    } finally {
      p.destroy();
    }
    const out = await tool('nbdinfo', ['--size', `nbds://alice@127.0.0.1:${port(psk)}/scratch?tls-psk-file=${pskFile}`]);
    expect(out.trim()).toBe(String(8 * 1024 * 1024));
  });

  it('survives resets once TLS is up (in the handshake and in transmission), and drops a connection at a corrupt TLS record', async () => {
    const setup = loadTls({ mode: 'require', psk: pskFile });
    const s = await serveDevices([{ name: 'd', device: new MemoryDevice({ size: 1024 * 1024 }) }], { tls: setup });
    const [identity, hex] = fs.readFileSync(pskFile, 'utf8').trim().split(':');
    /** A raw connection taken through STARTTLS to a PSK session: the socket beneath and the TLS layer over it. */
    const upgrade = async (): Promise<{ raw: net.Socket; secure: tls.TLSSocket }> => {
      const raw = net.connect(s.port, '127.0.0.1');
      raw.on('error', () => undefined);
      const p = await new Promise<RawPeer>((resolve) => raw.once('connect', () => resolve(RawPeer.wrap(raw))));
      await greet(p);
      p.send(option(K.OPT_STARTTLS));
      expect((await optReply(p)).type).toBe(K.REP_ACK);
      p.detach();
      const secure = tls.connect({ socket: raw, ciphers: 'PSK', maxVersion: 'TLSv1.2', checkServerIdentity: () => undefined, pskCallback: () => ({ identity: identity!, psk: Buffer.from(hex!, 'hex') }) });
      secure.on('error', () => undefined);
      await new Promise((resolve) => secure.once('secureConnect', resolve));
      return { raw, secure };
    };
    try {
      for (const stage of ['handshake', 'transmission'] as const) {
        const { raw, secure } = await upgrade();
        if (stage === 'transmission') {
          const hdr = Buffer.alloc(16);
          hdr.writeBigUInt64BE(0x49484156454f5054n, 0);
          hdr.writeUInt32BE(K.OPT_GO, 8);
          const data = Buffer.from([0, 0, 0, 1, 0x64, 0, 0]);
          hdr.writeUInt32BE(data.length, 12);
          secure.write(Buffer.concat([hdr, data]));
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        raw.resetAndDestroy();
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // A record that is not TLS, once TLS is up, is a TLS error on the server's side.
      const { raw, secure } = await upgrade();
      // Written beneath the client's TLS layer, straight to the socket.
      const fd = (raw as unknown as { _handle: { fd: number } })._handle.fd;
      const closed = new Promise((resolve) => secure.once('close', resolve));
      fs.writeSync(fd, Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20, ...crypto.randomBytes(32)]));
      // At once, not when the 30 s handshake timer happens to fire.
      await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the server kept a connection after a bad TLS record')), 3000))]);
      const c = await NbdClient.connect({ port: s.port, export: 'd', tls: { psk: { identity: identity!, key: Buffer.from(hex!, 'hex') } } });
      await c.disconnect();
    } finally {
      await s.close();
    }
  });

  it('refuses a PSK client with the wrong key', async () => {
    const wrong = path.join(dir, 'wrong.psk');
    fs.writeFileSync(wrong, `alice:${crypto.randomBytes(32).toString('hex')}\n`);
    await expect(tool('nbdinfo', [`nbds://alice@127.0.0.1:${port(psk)}/scratch?tls-psk-file=${wrong}`])).rejects.toThrow();
  });

  it('with --tls-ca, serves clients that present a certificate from that CA and refuses the others', async () => {
    const s = await startServe([
      '--memory', '4M', '--listen', '127.0.0.1:0', '--tls', 'require', '--tls-cert', path.join(pki, 'server-cert.pem'),
      '--tls-key', path.join(pki, 'server-key.pem'), '--tls-ca', path.join(pki, 'ca-cert.pem'),
    ]);
    try {
      const opts = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port(s)},export=memory,tls-creds=tls0`;
      const info = (credsDir: string) => tool('qemu-img', ['info', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${credsDir}`, '--image-opts', opts]);
      expect(await info(certClientDir)).toMatch(/virtual size: 4 MiB/);
      await expect(info(clientDir)).rejects.toThrow();
      const ca = fs.readFileSync(path.join(pki, 'ca-cert.pem'));
      const withCert = await NbdClient.connect({
        port: port(s),
        export: 'memory',
        tls: { ca, cert: fs.readFileSync(path.join(certClientDir, 'client-cert.pem')), key: fs.readFileSync(path.join(certClientDir, 'client-key.pem')) },
      });
      await withCert.disconnect();
      await expect(NbdClient.connect({ port: port(s), export: 'memory', tls: { ca } })).rejects.toThrow();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('the Strata client speaks TLS with a CA or a PSK, and --tls on still serves plaintext clients', async () => {
    const setup = loadTls({ mode: 'on', cert: path.join(pki, 'server-cert.pem'), key: path.join(pki, 'server-key.pem') });
    const s = await serveDevices([{ name: 'd', device: new MemoryDevice({ size: 1024 * 1024 }) }], { tls: setup });
    try {
      const secure = await NbdClient.connect({ port: s.port, export: 'd', tls: { ca: fs.readFileSync(path.join(pki, 'ca-cert.pem')) } });
      await secure.write(pattern(4096, 1), 0);
      await secure.disconnect();
      const plain = await NbdClient.connect({ port: s.port, export: 'd' });
      expect((await plain.read(0, 4096)).equals(pattern(4096, 1))).toBe(true);
      await plain.disconnect();
      await expect(NbdClient.connect({ port: s.port, export: 'd', tls: { ca: fs.readFileSync(path.join(pki, 'server-cert.pem')) } })).rejects.toThrow();
    } finally {
      await s.close();
    }
    const [identity, hex] = fs.readFileSync(pskFile, 'utf8').trim().split(':');
    const c = await NbdClient.connect({ port: port(psk), export: 'scratch', tls: { psk: { identity: identity!, key: Buffer.from(hex!, 'hex') } } });
    await c.write(pattern(512, 3), 512);
    expect((await c.read(512, 512)).equals(pattern(512, 3))).toBe(true);
    await c.disconnect();
  });
});
