/**
 * A tiny WebAssembly assembler for Strata's SIMD kernels (RAID parity, data
 * checksums). The kernels are written below their callers as instruction
 * lists and assembled in-process: no toolchain, no binary blob to trust.
 * Only what the kernels use is here.
 */
export const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
export const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) return [...out, b];
    out.push(b | 0x80);
  }
};
export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
export const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes];
export const name = (t: string): number[] => [...uleb(t.length), ...Buffer.from(t, 'latin1')];

export const I32 = 0x7f;
export const V128 = 0x7b;
export const get = (i: number): number[] => [0x20, ...uleb(i)];
export const set = (i: number): number[] => [0x21, ...uleb(i)];
export const tee = (i: number): number[] => [0x22, ...uleb(i)];
export const i32 = (n: number): number[] => [0x41, ...sleb(n)];
export const simd = (op: number): number[] => [0xfd, ...uleb(op)];
export const LOAD = [...simd(0x00), 0, 0];
export const STORE = [...simd(0x0b), 0, 0];
export const SPLAT8 = simd(0x0f);
export const SPLAT32 = simd(0x11);
export const AND = simd(0x4e);
export const OR = simd(0x50);
export const XOR = simd(0x51);
export const SHL8 = simd(0x6b);
export const SHRS8 = simd(0x6c);
export const SHRU8 = simd(0x6d);
export const SHL32 = simd(0xab);
export const SHRU32 = simd(0xad);
export const ADD32X4 = simd(0xae);
export const MUL32X4 = simd(0xb5);
export const SWIZZLE = simd(0x0e);
export const ADD = [0x6a];
export const SUB = [0x6b];
export const MUL = [0x6c];
export const GE_U = [0x4f];
export const EQZ = [0x45];
export const BLOCK = [0x02, 0x40];
export const LOOP = [0x03, 0x40];
export const IF = [0x04, 0x40];
export const END = [0x0b];
export const BR = (d: number): number[] => [0x0c, ...uleb(d)];
export const BR_IF = (d: number): number[] => [0x0d, ...uleb(d)];

/** The slice of the WebAssembly API used here (the project's TypeScript libs do not declare it). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

/**
 * Instantiates a module, or undefined when WebAssembly (or its SIMD) is not
 * there or STRATA_NO_SIMD=1 asks for the JavaScript paths.
 */
export function instantiate(bytes: Uint8Array): Record<string, unknown> | undefined {
  if (process.env.STRATA_NO_SIMD === '1' || !wasm) return undefined;
  try {
    if (!wasm.validate(bytes)) return undefined;
    return new wasm.Instance(new wasm.Module(bytes)).exports;
  } catch {
    return undefined;
  }
}

/** Grows a module's memory to at least `bytes`; false past 1 GiB. */
export function ensureMemory(memory: WasmMemory, bytes: number): boolean {
  if (bytes > 1024 ** 3) return false;
  if (memory.buffer.byteLength < bytes) memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
  return true;
}
