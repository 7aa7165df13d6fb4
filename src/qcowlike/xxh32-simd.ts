import {
  ADD, ADD32X4, BLOCK, BR, BR_IF, END, ensureMemory, GE_U, get, I32, i32, instantiate, LOAD, LOOP, MUL, MUL32X4, name, OR, section, set,
  SHL32, SHRU32, SPLAT32, STORE, tee, uleb, V128, vec, type WasmMemory,
} from '../wasm/assembler.js';
import { stripeHashable, xxh32Stripes } from './xxh32.js';

/**
 * XXH32 of many equal-sized sub-clusters at once, its four lanes in one
 * WebAssembly SIMD register (i32x4): one call per run of sub-clusters, where
 * the JavaScript loop works lane by lane. Lengths must be whole 16-byte
 * stripes, which sub-clusters always are.
 *
 * lanes(data, size, groups, init, out): for each of 4·groups blocks of
 * `size` bytes at `data`, run the XXH32 stripe loop from the four seeds at
 * `init` and store the four lanes at out + 16·k. JavaScript merges and
 * avalanches; a remainder of fewer than four blocks is hashed in JavaScript.
 */
const P1 = 0x9e3779b1 | 0;
const P2 = 0x85ebca77 | 0;
const P3 = 0xc2b2ae3d | 0;

function assemble(): Uint8Array {
  // Four blocks at a time, one accumulator each: the multiply's latency is hidden by the other three chains.
  // Params 0 data, 1 size, 2 groups, 3 init, 4 out; locals 5 g, 6 p, 7 end, 8 q, 9-12 acc0..3, 13 p1, 14 p2, 15 t.
  const [data, size, groups, init, out, g, p, end, q] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const accs = [9, 10, 11, 12];
  const [p1, p2, t] = [13, 14, 15];
  const round = (a: number): number[] => [
    ...get(a), ...get(q), ...LOAD, ...get(p2), ...MUL32X4, ...ADD32X4, ...tee(t),
    ...i32(13), ...SHL32, ...get(t), ...i32(19), ...SHRU32, ...OR,
    ...get(p1), ...MUL32X4, ...set(a),
    ...get(q), ...get(size), ...ADD, ...set(q),
  ];
  const body = [
    ...vec([
      [4, I32],
      [7, V128],
    ]),
    ...i32(P1), ...SPLAT32, ...set(p1),
    ...i32(P2), ...SPLAT32, ...set(p2),
    ...i32(0), ...set(g),
    ...BLOCK, ...LOOP,
    ...get(g), ...get(groups), ...GE_U, ...BR_IF(1),
    ...accs.flatMap((a) => [...get(init), ...LOAD, ...set(a)]),
    // p walks block 0 of the group; q = p + j·size reaches block j.
    ...get(data), ...get(g), ...get(size), ...i32(2), ...[0x74], ...MUL, ...ADD, ...tee(p), ...get(size), ...ADD, ...set(end),
    ...BLOCK, ...LOOP,
    ...get(p), ...get(end), ...GE_U, ...BR_IF(1),
    ...get(p), ...set(q),
    ...accs.flatMap(round),
    ...get(p), ...i32(16), ...ADD, ...set(p),
    ...BR(0),
    ...END, ...END,
    ...accs.flatMap((a, j) => [...get(out), ...get(g), ...i32(64), ...MUL, ...ADD, ...i32(16 * j), ...ADD, ...get(a), ...STORE]),
    ...get(g), ...i32(1), ...ADD, ...set(g),
    ...BR(0),
    ...END, ...END,
    ...END,
  ];
  const single = assembleSingle();
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32], [I32]]), 0]])),
    ...section(3, vec([[0], [0]])),
    ...section(5, vec([[0x00, 1]])),
    ...section(7, vec([[...name('m'), 0x02, 0], [...name('lanes'), 0x00, 0], [...name('single'), 0x00, 1]])),
    ...section(10, vec([[...uleb(body.length), ...body], [...uleb(single.length), ...single]])),
  ]);
}

/**
 * The same stripe loop for blocks taken one at a time, in scalar i32
 * arithmetic: a lone block gives the vector form one dependency chain and
 * leaves it waiting on every multiply, while four scalar lanes run side by side.
 */
function assembleSingle(): number[] {
  const [data, size, count, init, out, k, p, end] = [0, 1, 2, 3, 4, 5, 6, 7];
  const lanes = [8, 9, 10, 11];
  const LOAD32 = (at: number): number[] => [0x28, 2, ...uleb(at)];
  const STORE32 = (at: number): number[] => [0x36, 2, ...uleb(at)];
  const ROTL = [0x77];
  return [
    ...vec([[7, I32]]),
    ...i32(0), ...set(k),
    ...BLOCK, ...LOOP,
    ...get(k), ...get(count), ...GE_U, ...BR_IF(1),
    ...lanes.flatMap((v, j) => [...get(init), ...LOAD32(4 * j), ...set(v)]),
    ...get(data), ...get(k), ...get(size), ...MUL, ...ADD, ...tee(p), ...get(size), ...ADD, ...set(end),
    ...BLOCK, ...LOOP,
    ...get(p), ...get(end), ...GE_U, ...BR_IF(1),
    ...lanes.flatMap((v, j) => [...get(v), ...get(p), ...LOAD32(4 * j), ...i32(P2), ...MUL, ...ADD, ...i32(13), ...ROTL, ...i32(P1), ...MUL, ...set(v)]),
    ...get(p), ...i32(16), ...ADD, ...set(p),
    ...BR(0),
    ...END, ...END,
    ...lanes.flatMap((v, j) => [...get(out), ...get(k), ...i32(16), ...MUL, ...ADD, ...get(v), ...STORE32(4 * j)]),
    ...get(k), ...i32(1), ...ADD, ...set(k),
    ...BR(0),
    ...END, ...END,
    ...END,
  ];
}

type Kernel = (data: number, size: number, count: number, init: number, out: number) => void;
const exports = instantiate(assemble());
const kernel = exports && { memory: exports.m as WasmMemory, lanes: exports.lanes as Kernel, single: exports.single as Kernel };
let seeded = -1;

export const simdChecksums = kernel !== undefined;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/**
 * Writes into `sums` the XXH32 (with `seed`) of each of the `count`
 * consecutive `size`-byte blocks of `buf`, starting at sums[at]. `size` is a
 * multiple of 16.
 */
export function xxh32Blocks(buf: Uint8Array, size: number, count: number, seed: number, sums: Uint32Array | number[], at = 0): void {
  if (!kernel || size % 16 !== 0 || size === 0) {
    for (let k = 0; k < count; k++) {
      const b = buf.subarray(k * size, (k + 1) * size);
      sums[at + k] = stripeHashable(b) ? xxh32Stripes(b, seed) : xxh32Copy(b, seed);
    }
    return;
  }
  const lanesAt = 16;
  const dataAt = 16 + count * 16;
  ensureMemory(kernel.memory, dataAt + count * size);
  const mem = new Uint8Array(kernel.memory.buffer);
  const words = new Uint32Array(kernel.memory.buffer);
  if (seeded !== seed) {
    words[0] = (seed + P1 + P2) >>> 0;
    words[1] = (seed + P2) >>> 0;
    words[2] = seed >>> 0;
    words[3] = (seed - P1) >>> 0;
    seeded = seed;
  }
  mem.set(buf.subarray(0, count * size), dataAt);
  const grouped = count - (count % 4);
  if (grouped > 0) kernel.lanes(dataAt, size, grouped / 4, 0, lanesAt);
  if (grouped < count) kernel.single(dataAt + grouped * size, size, count - grouped, 0, lanesAt + grouped * 16);
  for (let k = 0; k < count; k++) {
    const w = (lanesAt >> 2) + k * 4;
    let h = (rotl(words[w]! | 0, 1) + rotl(words[w + 1]! | 0, 7) + rotl(words[w + 2]! | 0, 12) + rotl(words[w + 3]! | 0, 18)) | 0;
    h = (h + size) | 0;
    h ^= h >>> 15;
    h = Math.imul(h, P2);
    h ^= h >>> 13;
    h = Math.imul(h, P3);
    h ^= h >>> 16;
    sums[at + k] = h >>> 0;
  }
}

/** An unaligned block: hash an aligned copy. */
function xxh32Copy(b: Uint8Array, seed: number): number {
  const copy = new Uint8Array(b.length);
  copy.set(b);
  return xxh32Stripes(copy, seed);
}
