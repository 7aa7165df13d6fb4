/** Bytes of a tar block: headers and the padding of every member's data. */
export const BLOCK = 512;
/** GNU tar pads archives to whole records of 20 blocks. */
export const RECORD = 20 * BLOCK;

/** `n` rounded up to whole blocks. */
export const blocks = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

function octal(buf: Buffer, at: number, width: number, value: number): void {
  buf.write(`${value.toString(8).padStart(width - 1, '0')}\0`, at, width, 'latin1');
}

/**
 * The ustar header of a regular file. A size of 8 GiB or more does not fit
 * the 11 octal digits, so it is written in base 256 as GNU tar, bsdtar and
 * tar-stream read it. Names are at most 100 bytes (no prefix split).
 */
export function ustarHeader(name: string, size: number, mtime: Date): Buffer {
  const h = Buffer.alloc(BLOCK);
  if (Buffer.byteLength(name) > 100) throw new RangeError(`the tar member name ${name} is longer than 100 bytes`);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  if (size < 8 ** 11) octal(h, 124, 12, size);
  else {
    h[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      h[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  octal(h, 136, 12, Math.floor(mtime.getTime() / 1000));
  h.write('        ', 148, 8, 'latin1');
  h.write('0', 156, 1, 'latin1');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  h.write('root', 265, 32, 'latin1');
  h.write('root', 297, 32, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}
