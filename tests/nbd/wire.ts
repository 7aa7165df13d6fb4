import { expect } from 'vitest';
import * as K from '../../src/nbd/constants.js';
import type { RawPeer } from './support.js';

/** Hand-built protocol messages for the raw-socket tests: nothing here trusts the server code. */

export async function greet(peer: RawPeer, clientFlags = K.FLAG_C_FIXED_NEWSTYLE | K.FLAG_C_NO_ZEROES): Promise<void> {
  const g = await peer.read(18);
  expect(g.readBigUInt64BE(0)).toBe(0x4e42444d41474943n);
  expect(g.readBigUInt64BE(8)).toBe(0x49484156454f5054n);
  expect(g.readUInt16BE(16)).toBe(K.FLAG_FIXED_NEWSTYLE | K.FLAG_NO_ZEROES);
  peer.send(u32(clientFlags));
}

export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

export function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(0x49484156454f5054n, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

export async function optReply(peer: RawPeer): Promise<{ option: number; type: number; data: Buffer }> {
  const h = await peer.read(20);
  expect(h.readBigUInt64BE(0)).toBe(0x0003e889045565a9n);
  const length = h.readUInt32BE(16);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: length ? await peer.read(length) : Buffer.alloc(0) };
}

export function goData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(6 + n.length + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}

export function metaData(name: string, queries: string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
  return Buffer.concat(parts);
}

/** Negotiates up to transmission; returns the export size and transmission flags. */
export async function go(peer: RawPeer, name: string, opts: { structured?: boolean; meta?: boolean } = {}): Promise<{ size: number; flags: number }> {
  await greet(peer);
  if (opts.structured) {
    peer.send(option(K.OPT_STRUCTURED_REPLY));
    expect((await optReply(peer)).type).toBe(K.REP_ACK);
  }
  if (opts.meta) {
    peer.send(option(K.OPT_SET_META_CONTEXT, metaData(name, [K.BASE_ALLOCATION])));
    expect((await optReply(peer)).type).toBe(K.REP_META_CONTEXT);
    expect((await optReply(peer)).type).toBe(K.REP_ACK);
  }
  peer.send(option(K.OPT_GO, goData(name)));
  let size = -1;
  let flags = 0;
  for (;;) {
    const r = await optReply(peer);
    if (r.type === K.REP_ACK) break;
    expect(r.type).toBe(K.REP_INFO);
    if (r.data.readUInt16BE(0) === K.INFO_EXPORT) {
      size = Number(r.data.readBigUInt64BE(2));
      flags = r.data.readUInt16BE(10);
    }
  }
  return { size, flags };
}

export function request(type: number, flags: number, cookie: bigint, offset: bigint | number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(K.REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

export async function simpleReply(peer: RawPeer): Promise<{ error: number; cookie: bigint }> {
  const h = await peer.read(16);
  expect(h.readUInt32BE(0)).toBe(K.SIMPLE_REPLY_MAGIC);
  return { error: h.readUInt32BE(4), cookie: h.readBigUInt64BE(8) };
}

export interface Chunk {
  flags: number;
  type: number;
  cookie: bigint;
  payload: Buffer;
}

export async function chunk(peer: RawPeer): Promise<Chunk> {
  const h = await peer.read(20);
  expect(h.readUInt32BE(0)).toBe(K.STRUCTURED_REPLY_MAGIC);
  const length = h.readUInt32BE(16);
  return { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), cookie: h.readBigUInt64BE(8), payload: length ? await peer.read(length) : Buffer.alloc(0) };
}

/** All chunks of one structured reply, up to the one flagged DONE. */
export async function structuredReply(peer: RawPeer): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for (;;) {
    const c = await chunk(peer);
    out.push(c);
    if (c.flags & K.REPLY_FLAG_DONE) return out;
  }
}
