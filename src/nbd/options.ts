import { MAX_STRING, OPT_REPLY_MAGIC_HI, OPT_REPLY_MAGIC_LO } from './constants.js';

/** Option payloads as the protocol lays them out, and the replies to them. Pure functions: fuzzed directly. */

export class OptionError extends Error {}

export interface GoRequest {
  name: string;
  infos: number[];
}

/** NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count of info requests, the requests. */
export function parseGo(data: Buffer): GoRequest {
  const { name, nameLength } = exportName(data, 2);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) {
    throw new OptionError(`${count} information requests do not match ${data.length - 6 - nameLength} remaining bytes`);
  }
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, infos };
}

export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name, then counted queries. */
export function parseMetaContext(data: Buffer): MetaContextRequest {
  const { name, nameLength } = exportName(data, 4);
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) throw new OptionError(`query ${i} of ${count} lies beyond the option data`);
    const len = data.readUInt32BE(at);
    at += 4;
    if (len > data.length - at) throw new OptionError(`query ${i} length ${len} lies beyond the option data`);
    queries.push(readString(data, at, len));
    at += len;
  }
  if (at !== data.length) throw new OptionError(`${data.length - at} bytes follow the last query`);
  return { name, queries };
}

/** The export name that starts GO/INFO and META_CONTEXT data, with at least `tail` bytes of count after it. */
function exportName(data: Buffer, tail: number): { name: string; nameLength: number } {
  const least = 4 + tail;
  if (data.length < least) throw new OptionError(`option data of ${data.length} bytes is too short (at least ${least})`);
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - least) throw new OptionError(`export name length ${nameLength} does not fit in ${data.length} bytes of option data`);
  return { name: readString(data, 4, nameLength), nameLength };
}

/** A protocol string: UTF-8, no NUL, at most 4096 bytes. */
export function readString(data: Buffer, at: number, length: number): string {
  if (length > MAX_STRING) throw new OptionError(`a string of ${length} bytes is longer than the ${MAX_STRING} allowed`);
  const bytes = data.subarray(at, at + length);
  if (bytes.includes(0)) throw new OptionError('a string contains a NUL byte');
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) throw new OptionError('a string is not valid UTF-8');
  return text;
}

/** One option reply: magic, option, reply type, length, data. */
export function optionReply(option: number, type: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(20 + data.length);
  b.writeUInt32BE(OPT_REPLY_MAGIC_HI, 0);
  b.writeUInt32BE(OPT_REPLY_MAGIC_LO, 4);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

const EMPTY = Buffer.alloc(0);

export function serverEntry(name: string, description: string | undefined): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description ?? '', 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function infoExport(size: number, flags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(0, 0);
  b.writeUInt32BE(Math.floor(size / 4294967296), 2);
  b.writeUInt32BE(size % 4294967296, 6);
  b.writeUInt16BE(flags, 10);
  return b;
}

export function infoString(type: number, text: string): Buffer {
  const t = Buffer.from(text, 'utf8');
  const b = Buffer.allocUnsafe(2 + t.length);
  b.writeUInt16BE(type, 0);
  t.copy(b, 2);
  return b;
}

export function infoBlockSize(type: number, minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(type, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

export function metaContextEntry(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id, 0);
  n.copy(b, 4);
  return b;
}
