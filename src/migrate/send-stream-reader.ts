import { hasher } from '../snapshot/diff-stream.js';
import { ByteQueue } from '../snapshot/byte-queue.js';
import {
  checkManifest,
  FRAME_BYTES,
  FRAME_DATA,
  FRAME_END,
  FRAME_FINISH,
  frameSeed,
  MAX_FRAME,
  MAX_MANIFEST_BYTES,
  PREFIX_SEED,
  SEND_MAGIC,
  SEND_PREFIX_BYTES,
  SEND_VERSION,
  SendStreamError,
  type SendManifest,
  type SendStreamErrorCode,
} from './send-stream.js';

/**
 * Reads a send stream: the manifest, then one section at a time, each handed
 * out as the bytes of its diff stream (which DiffStreamReader then checks
 * record by record). Frames must come in order, each section's data then
 * its finish frame, and the stream must end with an end frame and nothing
 * after it.
 */
export class SendStreamReader {
  private readonly bytes: ByteQueue;
  private pos = 0;
  private seed = 0;
  private m: SendManifest | undefined;
  private nextSection = 0;
  /** The first section the stream carries. */
  private first = 0;
  private ended = false;
  private inSection = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.bytes = new ByteQueue(source);
  }

  /** Bytes of the stream read so far. */
  get position(): number {
    return this.pos;
  }

  async manifest(): Promise<SendManifest> {
    if (this.m) return this.m;
    const h = hasher();
    const prefix = await this.take(SEND_PREFIX_BYTES, 'the header');
    if (!prefix.subarray(0, 8).equals(SEND_MAGIC)) throw this.fail('EMAGIC', 0, `not a Strata send stream (its first 8 bytes are not the send magic${prefix[1] === 0x53 && prefix[2] === 0x44 ? '; this is a diff stream: strata import-diff reads it' : ''})`);
    if (prefix.readUInt32LE(16) !== h.h32(prefix.subarray(0, 16), PREFIX_SEED)) throw this.fail('ECORRUPT', 0, 'header damaged (the checksum of its first 16 bytes does not match)');
    const version = prefix.readUInt16LE(8);
    if (version !== SEND_VERSION) throw this.fail('EVERSION', 8, `send stream version ${version}; this Strata reads version ${SEND_VERSION}`);
    if (prefix.readUInt16LE(10) !== 0) throw this.fail('EVERSION', 10, 'send stream uses feature flags this Strata does not know');
    const length = prefix.readUInt32LE(12);
    if (length > MAX_MANIFEST_BYTES) throw this.fail('ECORRUPT', 12, `manifest of ${length} bytes (at most ${MAX_MANIFEST_BYTES})`);
    const body = await this.take(length, 'the header');
    const sumAt = this.pos;
    const sum = (await this.take(8, 'the header')).readBigUInt64LE(0);
    if (sum !== h.h64(Buffer.concat([prefix, body]), 0n)) throw this.fail('ECORRUPT', sumAt, 'header damaged (its checksum does not match)');
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw this.fail('ECORRUPT', SEND_PREFIX_BYTES, 'manifest is not JSON');
    }
    checkManifest(parsed, (msg) => this.fail('EINVAL', SEND_PREFIX_BYTES, `manifest: ${msg}`));
    this.seed = frameSeed(sum);
    this.m = parsed;
    this.first = parsed.resume?.section ?? 0;
    if (parsed.sections[this.first]?.omitted) this.first++;
    this.nextSection = this.first;
    return parsed;
  }

  /** The next section's index and its diff stream's bytes (read them to the end before asking for the next); null after the end frame. */
  async section(): Promise<{ index: number; bytes: AsyncIterable<Buffer> } | null> {
    const m = await this.manifest();
    if (this.inSection) throw new Error('a section was not read to its end');
    if (this.ended) return null;
    const at = this.pos;
    const head = await this.frame();
    if (head.type === FRAME_END) {
      const expected = m.sections.length - this.first;
      if (head.section !== expected || this.nextSection !== m.sections.length) throw this.fail('ECORRUPT', at, `end frame after ${this.nextSection - this.first} of ${expected} sections`);
      await this.bytes.fill(1);
      if (this.bytes.buffered > 0) throw this.fail('ECORRUPT', this.pos, 'bytes after the end frame (a send stream must end there)');
      this.ended = true;
      return null;
    }
    if (head.type !== FRAME_DATA && head.type !== FRAME_FINISH) throw this.fail('ECORRUPT', at, `unknown frame type 0x${head.type.toString(16)}`);
    const index = this.nextSection;
    if (head.section !== index) throw this.fail('ECORRUPT', at, `a frame of section ${head.section} where section ${index} was due`);
    this.inSection = true;
    return { index, bytes: this.sectionBytes(index, head) };
  }

  private async *sectionBytes(index: number, first: { type: number; section: number; length: number }): AsyncGenerator<Buffer> {
    let head = first;
    for (;;) {
      if (head.type === FRAME_FINISH) {
        this.inSection = false;
        this.nextSection = index + 1;
        return;
      }
      if (head.type !== FRAME_DATA) throw this.fail('ECORRUPT', this.pos - FRAME_BYTES, `section ${index}: frame type 0x${head.type.toString(16)} before its finish frame`);
      yield await this.take(head.length, `section ${index}'s data`);
      const at = this.pos;
      head = await this.frame();
      if (head.section !== index) throw this.fail('ECORRUPT', at, `a frame of section ${head.section} inside section ${index}`);
    }
  }

  private async frame(): Promise<{ type: number; section: number; length: number }> {
    const at = this.pos;
    const b = await this.take(FRAME_BYTES, 'a frame head');
    if (b.readUInt32LE(12) !== hasher().h32(b.subarray(0, 12), this.seed)) throw this.fail('ECORRUPT', at, 'frame head damaged (its checksum does not match; or a frame of another stream)');
    if (b.readUInt8(1) !== 0 || b.readUInt16LE(2) !== 0) throw this.fail('EVERSION', at, 'frame flags this Strata does not know');
    const length = b.readUInt32LE(8);
    if (b.readUInt8(0) === FRAME_DATA && (length === 0 || length > MAX_FRAME)) throw this.fail('ECORRUPT', at, `data frame of ${length} bytes (1 to ${MAX_FRAME})`);
    return { type: b.readUInt8(0), section: b.readUInt32LE(4), length };
  }

  private async take(n: number, what: string): Promise<Buffer> {
    const got = await this.bytes.take(n);
    if (!got) throw this.fail('ETRUNCATED', this.pos + this.bytes.buffered, `truncated: the stream ends inside ${what}`);
    this.pos += n;
    return got;
  }

  private fail(code: SendStreamErrorCode, at: number, message: string): SendStreamError {
    return new SendStreamError(code, `send stream: ${message} (at byte ${at})`);
  }
}
