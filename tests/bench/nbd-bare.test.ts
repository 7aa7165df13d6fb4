import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bareServer } from '../../bench/nbd-bare.js';
import * as K from '../../src/nbd/constants.js';
import { expectBytesEqual, hasTool, RawPeer, tool } from '../nbd/support.js';
import { greet, option, optReply, request, simpleReply, u32 } from '../nbd/wire.js';

const SIZE = 8 * 1024 * 1024;
const haveTools = hasTool('nbdinfo') && hasTool('qemu-img') && hasTool('qemu-io');

describe('the bare NBD server of the benchmark', () => {
  let dir: string;
  let file: string;
  let fd: number;
  let server: net.Server;
  let port: number;
  const uri = () => `nbd://127.0.0.1:${port}/disk`;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bare-'));
    file = path.join(dir, 'disk.raw');
    const initial = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i += 4096) initial.fill(i / 4096, i, i + 4096);
    fs.writeFileSync(file, initial);
    fd = fs.openSync(file, 'r+');
    server = bareServer({ name: 'disk', fd, size: SIZE });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const addr = server.address();
    port = typeof addr === 'object' && addr ? addr.port : 0;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(!haveTools)('tells nbdinfo its one export, its size and flags', async () => {
    const info = JSON.parse(await tool('nbdinfo', ['--json', uri()])) as {
      exports: { 'export-name': string; 'export-size': number; is_read_only: boolean; can_flush: boolean; can_fua: boolean }[];
    };
    expect(info.exports).toHaveLength(1);
    expect(info.exports[0]).toMatchObject({ 'export-name': 'disk', 'export-size': SIZE, is_read_only: false, can_flush: true, can_fua: true });
    const list = JSON.parse(await tool('nbdinfo', ['--json', '--list', `nbd://127.0.0.1:${port}/`])) as { exports: { 'export-name': string }[] };
    expect(list.exports.map((e) => e['export-name'])).toEqual(['disk']);
  });

  it.skipIf(!haveTools)('reads and writes what qemu-io and qemu-img read and write in the file', async () => {
    const info = JSON.parse(await tool('qemu-img', ['info', '--output=json', uri()])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(SIZE);
    // A write across a request boundary of several socket chunks, with FUA, then a flush.
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 12345 3000000', '-c', 'write -f -P 0xcd 6000000 4096', '-c', 'flush', uri()]);
    const expected = fs.readFileSync(file);
    expect(expected.subarray(12345, 12345 + 3000000).every((b) => b === 0xab)).toBe(true);
    expect(expected.subarray(6000000, 6004096).every((b) => b === 0xcd)).toBe(true);
    const copy = path.join(dir, 'copy.raw');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(), copy]);
    expectBytesEqual(fs.readFileSync(copy), expected, 'qemu-img convert of the export');
  });

  it.skipIf(!haveTools)('refuses a read past the end and an unknown export by name', async () => {
    await expect(tool('qemu-io', ['-f', 'raw', '-c', `read ${SIZE - 512} 1024`, uri()])).rejects.toThrow();
    await expect(tool('nbdinfo', [`nbd://127.0.0.1:${port}/other`])).rejects.toThrow();
  });

  it('serves a client of the old EXPORT_NAME handshake, with the zero padding it did not decline', async () => {
    const peer = await RawPeer.connect(port);
    try {
      await greet(peer, K.FLAG_C_FIXED_NEWSTYLE);
      peer.send(option(K.OPT_EXPORT_NAME, Buffer.from('disk')));
      const reply = await peer.read(134);
      expect(reply.readBigUInt64BE(0)).toBe(BigInt(SIZE));
      expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
      peer.send(request(K.CMD_READ, 0, 0xfedcba9876543210n, 4096 * 5, 4096));
      const r = await simpleReply(peer);
      expect(r).toEqual({ error: 0, cookie: 0xfedcba9876543210n });
      expect((await peer.read(4096)).equals(fs.readFileSync(file).subarray(4096 * 5, 4096 * 6))).toBe(true);
      // A write past the end still sends its payload: the stream must stay in step for the next request.
      peer.send(request(K.CMD_WRITE, 0, 7n, SIZE - 2048, 4096), Buffer.alloc(4096, 1));
      expect(await simpleReply(peer)).toEqual({ error: 28, cookie: 7n });
      peer.send(request(K.CMD_FLUSH, 0, 8n, 0, 0));
      expect(await simpleReply(peer)).toEqual({ error: 0, cookie: 8n });
      peer.send(request(K.CMD_DISC, 0, 9n, 0, 0));
      await peer.closedByServer();
    } finally {
      peer.destroy();
    }
  });

  it('answers options it does not know with ERR_UNSUP and hangs up on unknown client flags', async () => {
    const peer = await RawPeer.connect(port);
    try {
      await greet(peer);
      peer.send(option(K.OPT_STRUCTURED_REPLY));
      expect((await optReply(peer)).type).toBe(K.REP_ERR_UNSUP);
      peer.send(option(K.OPT_ABORT));
      expect((await optReply(peer)).type).toBe(K.REP_ACK);
      await peer.closedByServer();
    } finally {
      peer.destroy();
    }
    const rude = await RawPeer.connect(port);
    try {
      await rude.read(18);
      rude.send(u32(K.FLAG_C_FIXED_NEWSTYLE | 0x80));
      await rude.closedByServer();
    } finally {
      rude.destroy();
    }
  });
});
