import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { hasTool } from '../../nbd/support.js';

/** Whether qemu-img and qemu-io are there (in CI they must be). */
export const haveQemu = (): boolean => hasTool('qemu-img') && hasTool('qemu-io');

/** Runs qemu-img (or qemu-io); returns stdout, throws with stderr. */
export function qemu(tool: 'qemu-img' | 'qemu-io', args: string[]): string {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${tool} is needed (scripts/test-deps.sh installs it): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** qemu-io writes (each the arguments of one `write` command) applied to an image in `format`. */
export function qemuWrite(img: string, format: string, writes: string[][]): void {
  qemu('qemu-io', ['-f', format, ...writes.flatMap((w) => ['-c', `write ${w.join(' ')}`]), img]);
}

/** An image qemu-img creates at `img` and qemu-io then writes; `writes` gets the virtual size qemu-img chose. */
export function qemuImage(format: string, img: string, size: string, options: string[], writes: (virtual: number) => string[][]): string {
  qemu('qemu-img', ['create', '-q', '-f', format, ...options, img, size]);
  qemuWrite(img, format, writes(qemuSize(img, format)));
  return img;
}

/** The virtual size qemu-img reports for an image. */
export function qemuSize(file: string, format: string): number {
  return (JSON.parse(qemu('qemu-img', ['info', '-f', format, '--output', 'json', file])) as { 'virtual-size': number })['virtual-size'];
}

/** The guest's bytes of an image as qemu-img converts them (the format probed when not given), by way of `scratch`. */
export function qemuRaw(file: string, scratch: string, format?: string): Buffer {
  qemu('qemu-img', ['convert', ...(format ? ['-f', format] : []), '-O', 'raw', file, scratch]);
  const data = fs.readFileSync(scratch);
  fs.rmSync(scratch);
  return data;
}

/** Throws unless qemu-img compares the image in `format` equal to the raw file. */
export function qemuCompare(file: string, format: string, raw: string): void {
  qemu('qemu-img', ['compare', '-q', '-f', format, '-F', 'raw', file, raw]);
}
