import {
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_ERROR,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';

/** Encoders of transmission replies. Cookies are written back as the two 32-bit halves they were read as. */

export const SIMPLE_HEADER = 16;
export const CHUNK_HEADER = 20;

export function simpleReply(error: number, cookieHi: number, cookieLo: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_HEADER);
  writeSimpleReply(b, error, cookieHi, cookieLo);
  return b;
}

/** A simple reply's header at the start of `b`. */
export function writeSimpleReply(b: Buffer, error: number, cookieHi: number, cookieLo: number): void {
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeUInt32BE(cookieHi, 8);
  b.writeUInt32BE(cookieLo, 12);
}

function chunkHeader(b: Buffer, flags: number, type: number, cookieHi: number, cookieLo: number, length: number): void {
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeUInt32BE(cookieHi, 8);
  b.writeUInt32BE(cookieLo, 12);
  b.writeUInt32BE(length, 16);
}

function writeU64(b: Buffer, value: number, at: number): void {
  const hi = Math.floor(value / 4294967296);
  b.writeUInt32BE(hi, at);
  b.writeUInt32BE(value - hi * 4294967296, at + 4);
}

/** Bytes of an OFFSET_DATA chunk's header. */
export const OFFSET_DATA_HEADER = CHUNK_HEADER + 8;

/** Header of an OFFSET_DATA chunk; the `dataLength` bytes of data follow it on the wire. */
export function offsetDataHeader(done: boolean, cookieHi: number, cookieLo: number, offset: number, dataLength: number): Buffer {
  const b = Buffer.allocUnsafe(OFFSET_DATA_HEADER);
  writeOffsetDataHeader(b, done, cookieHi, cookieLo, offset, dataLength);
  return b;
}

/** The same header at the start of `b`. */
export function writeOffsetDataHeader(b: Buffer, done: boolean, cookieHi: number, cookieLo: number, offset: number, dataLength: number): void {
  chunkHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_OFFSET_DATA, cookieHi, cookieLo, 8 + dataLength);
  writeU64(b, offset, CHUNK_HEADER);
}

export function offsetHole(done: boolean, cookieHi: number, cookieLo: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER + 12);
  chunkHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_OFFSET_HOLE, cookieHi, cookieLo, 12);
  writeU64(b, offset, CHUNK_HEADER);
  b.writeUInt32BE(length, CHUNK_HEADER + 8);
  return b;
}

export function noneChunk(cookieHi: number, cookieLo: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER);
  chunkHeader(b, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookieHi, cookieLo, 0);
  return b;
}

/** A final NBD_REPLY_TYPE_ERROR chunk; the message tells a person what was wrong. */
export function errorChunk(error: number, message: string, cookieHi: number, cookieLo: number): Buffer {
  const msg = Buffer.from(message.slice(0, 1024), 'utf8');
  const b = Buffer.allocUnsafe(CHUNK_HEADER + 6 + msg.length);
  chunkHeader(b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookieHi, cookieLo, 6 + msg.length);
  b.writeUInt32BE(error, CHUNK_HEADER);
  b.writeUInt16BE(msg.length, CHUNK_HEADER + 4);
  msg.copy(b, CHUNK_HEADER + 6);
  return b;
}

/** A BLOCK_STATUS chunk of one context: `descriptors` holds (length, flags) pairs; `done` on the last context's. */
export function blockStatusChunk(contextId: number, descriptors: number[], cookieHi: number, cookieLo: number, done = true): Buffer {
  const n = descriptors.length / 2;
  const b = Buffer.allocUnsafe(CHUNK_HEADER + 4 + 8 * n);
  chunkHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_BLOCK_STATUS, cookieHi, cookieLo, 4 + 8 * n);
  b.writeUInt32BE(contextId, CHUNK_HEADER);
  for (let i = 0; i < descriptors.length; i++) b.writeUInt32BE(descriptors[i]!, CHUNK_HEADER + 4 + 4 * i);
  return b;
}
