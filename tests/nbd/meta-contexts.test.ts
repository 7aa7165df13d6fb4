import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as K from '../../src/nbd/constants.js';
import { SparseMemoryDevice } from '../../src/nbd/index.js';
import { ALLOCATION_DEPTH, matchMetaContexts } from '../../src/nbd/meta-contexts.js';
import { propertyRuns } from '../support/scratch.js';
import { RawPeer, serveDevices } from './support.js';
import { goData, greet, metaData, option, optReply, request, structuredReply, type Chunk } from './wire.js';

const PAGE = 64 * 1024;
const PAGES = 64;
const SIZE = PAGES * PAGE;

/** A volume-like device whose pages each come from a layer of a chain: `depth[i]` for page i (0: no layer holds it). */
class LayeredDevice extends SparseMemoryDevice {
  readonly depth: number[] = new Array<number>(PAGES).fill(0);
  calls = 0;

  async allocationDepth(offset: number, length: number): Promise<Array<{ offset: number; length: number; depth: number }>> {
    this.calls++;
    // One run per page touched, unmerged: merging neighbours is the server's job.
    const out: Array<{ offset: number; length: number; depth: number }> = [];
    for (let p = Math.floor(offset / PAGE); p * PAGE < offset + length; p++) {
      const start = Math.max(offset, p * PAGE);
      out.push({ offset: start, length: Math.min((p + 1) * PAGE, offset + length) - start, depth: this.depth[p]! });
    }
    return out;
  }
}

const layered = new LayeredDevice(SIZE, 'layered');
const plain = new SparseMemoryDevice(SIZE, 'plain');
let served: Awaited<ReturnType<typeof serveDevices>>;
const peers: RawPeer[] = [];

beforeAll(async () => {
  served = await serveDevices([
    { name: 'layered', device: layered, readOnly: true },
    { name: 'plain', device: plain },
  ]);
  // The plain device holds pages 2–3 and 10; the rest are holes.
  await plain.write(Buffer.alloc(2 * PAGE, 1), 2 * PAGE);
  await plain.write(Buffer.alloc(PAGE, 2), 10 * PAGE);
});

afterAll(async () => {
  for (const p of peers) p.destroy();
  await served.close();
});

async function negotiated(name: string, queries: string[]): Promise<{ peer: RawPeer; ids: Map<string, number> }> {
  const peer = await RawPeer.connect(served.port);
  peers.push(peer);
  await greet(peer);
  peer.send(option(K.OPT_STRUCTURED_REPLY));
  expect((await optReply(peer)).type).toBe(K.REP_ACK);
  peer.send(option(K.OPT_SET_META_CONTEXT, metaData(name, queries)));
  const ids = new Map<string, number>();
  for (;;) {
    const r = await optReply(peer);
    if (r.type === K.REP_ACK) break;
    expect(r.type).toBe(K.REP_META_CONTEXT);
    ids.set(r.data.subarray(4).toString(), r.data.readUInt32BE(0));
  }
  peer.send(option(K.OPT_GO, goData(name)));
  while ((await optReply(peer)).type !== K.REP_ACK);
  return { peer, ids };
}

async function listContexts(name: string, queries: string[]): Promise<Array<[number, string]>> {
  const peer = await RawPeer.connect(served.port);
  peers.push(peer);
  await greet(peer);
  peer.send(option(K.OPT_STRUCTURED_REPLY));
  await optReply(peer);
  peer.send(option(K.OPT_LIST_META_CONTEXT, metaData(name, queries)));
  const out: Array<[number, string]> = [];
  for (;;) {
    const r = await optReply(peer);
    if (r.type === K.REP_ACK) return out;
    expect(r.type).toBe(K.REP_META_CONTEXT);
    out.push([r.data.readUInt32BE(0), r.data.subarray(4).toString()]);
  }
}

function decode(c: Chunk): { id: number; runs: Array<[number, number]> } {
  expect(c.type).toBe(K.REPLY_TYPE_BLOCK_STATUS);
  const runs: Array<[number, number]> = [];
  for (let at = 4; at < c.payload.length; at += 8) runs.push([c.payload.readUInt32BE(at), c.payload.readUInt32BE(at + 4)]);
  return { id: c.payload.readUInt32BE(0), runs };
}

/** The runs a per-page state gives from `offset` for `length` bytes, neighbours merged. */
function modelRuns(stateOfPage: (p: number) => number, offset: number, length: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let pos = offset; pos < offset + length; ) {
    const p = Math.floor(pos / PAGE);
    const n = Math.min((p + 1) * PAGE, offset + length) - pos;
    const s = stateOfPage(p);
    const last = out[out.length - 1];
    if (last && last[1] === s) last[0] += n;
    else out.push([n, s]);
    pos += n;
  }
  return out;
}

describe('choosing metadata contexts (qemu-nbd rules)', () => {
  it('lists all with no query, a namespace with its empty leaf; selects only full names', () => {
    const names = (q: string[], listing: boolean) => matchMetaContexts(q, listing).map((c) => c.name);
    expect(names([], true)).toEqual([K.BASE_ALLOCATION, ALLOCATION_DEPTH]);
    expect(names([], false)).toEqual([]);
    expect(names(['qemu:'], true)).toEqual([ALLOCATION_DEPTH]);
    expect(names(['qemu:'], false)).toEqual([]);
    expect(names(['base:'], false)).toEqual([]);
    expect(names([ALLOCATION_DEPTH, K.BASE_ALLOCATION, ALLOCATION_DEPTH], false)).toEqual([K.BASE_ALLOCATION, ALLOCATION_DEPTH]);
    expect(names(['qemu:dirty-bitmap:b0', 'x-foo:bar', 'base:other', 'qemu:allocation'], true)).toEqual([]);
  });

  it('matches a plain model for any list of queries', () => {
    const query = fc.constantFrom('base:', K.BASE_ALLOCATION, 'qemu:', ALLOCATION_DEPTH, 'qemu:dirty-bitmap:', 'qemu:allocation-depthx', 'x-a:b', 'base:allocationx', 'nocolon', '');
    fc.assert(
      fc.property(fc.array(query, { maxLength: 6 }), fc.boolean(), (queries, listing) => {
        const all = listing && queries.length === 0;
        const base = all || queries.includes(K.BASE_ALLOCATION) || (listing && queries.includes('base:'));
        const depth = all || queries.includes(ALLOCATION_DEPTH) || (listing && queries.includes('qemu:'));
        const got = matchMetaContexts(queries, listing);
        expect(got.map((c) => c.name)).toEqual([...(base ? [K.BASE_ALLOCATION] : []), ...(depth ? [ALLOCATION_DEPTH] : [])]);
        expect(new Set(got.map((c) => c.id)).size).toBe(got.length);
      }),
      { numRuns: propertyRuns(400) },
    );
  });

  it('answers LIST_META_CONTEXT on the wire with id 0, SET_META_CONTEXT with distinct nonzero ids', async () => {
    expect(await listContexts('layered', [])).toEqual([
      [0, K.BASE_ALLOCATION],
      [0, ALLOCATION_DEPTH],
    ]);
    expect(await listContexts('plain', ['qemu:'])).toEqual([[0, ALLOCATION_DEPTH]]);
    expect(await listContexts('plain', ['qemu:dirty-bitmap:', 'x-y:z'])).toEqual([]);
    const { ids } = await negotiated('layered', [ALLOCATION_DEPTH, 'qemu:', K.BASE_ALLOCATION]);
    expect([...ids.keys()]).toEqual([K.BASE_ALLOCATION, ALLOCATION_DEPTH]);
    expect(ids.get(K.BASE_ALLOCATION)).not.toBe(ids.get(ALLOCATION_DEPTH));
  });
});

describe('block status with several contexts', () => {
  it('sends one chunk per selected context, each with its id, DONE only on the last', async () => {
    layered.depth.fill(0);
    layered.depth.fill(1, 0, 4);
    layered.depth.fill(3, 4, 8);
    const { peer, ids } = await negotiated('layered', [K.BASE_ALLOCATION, ALLOCATION_DEPTH]);
    peer.send(request(K.CMD_BLOCK_STATUS, 0, 5n, 0, 10 * PAGE));
    const chunks = await structuredReply(peer);
    expect(chunks.map((c) => c.flags & K.REPLY_FLAG_DONE)).toEqual([0, K.REPLY_FLAG_DONE]);
    expect(chunks.every((c) => c.cookie === 5n)).toBe(true);
    const [base, depth] = chunks.map(decode);
    expect(base!.id).toBe(ids.get(K.BASE_ALLOCATION));
    // Nothing was written to the layered device's memory: all one hole.
    expect(base!.runs).toEqual([[10 * PAGE, K.STATE_HOLE | K.STATE_ZERO]]);
    expect(depth!.id).toBe(ids.get(ALLOCATION_DEPTH));
    expect(depth!.runs).toEqual([
      [4 * PAGE, 1],
      [4 * PAGE, 3],
      [2 * PAGE, 0],
    ]);
  });

  it('with only qemu:allocation-depth, one final chunk; with REQ_ONE one descriptor per chunk within the request', async () => {
    layered.depth.fill(2);
    const { peer, ids } = await negotiated('layered', [ALLOCATION_DEPTH]);
    peer.send(request(K.CMD_BLOCK_STATUS, 0, 1n, PAGE / 2, 3 * PAGE));
    const only = await structuredReply(peer);
    expect(only.length).toBe(1);
    expect(decode(only[0]!)).toEqual({ id: ids.get(ALLOCATION_DEPTH), runs: [[3 * PAGE, 2]] });

    const both = await negotiated('layered', [K.BASE_ALLOCATION, ALLOCATION_DEPTH]);
    layered.depth[0] = 1;
    both.peer.send(request(K.CMD_BLOCK_STATUS, K.CMD_FLAG_REQ_ONE, 2n, 100, 2 * PAGE));
    const one = (await structuredReply(both.peer)).map(decode);
    expect(one.map((c) => c.runs)).toEqual([[[2 * PAGE, K.STATE_HOLE | K.STATE_ZERO]], [[PAGE - 100, 1]]]);
  });

  it('derives depth from allocation on a device that has none: written 1, holes 0', async () => {
    const { peer } = await negotiated('plain', [ALLOCATION_DEPTH]);
    peer.send(request(K.CMD_BLOCK_STATUS, 0, 9n, 0, 12 * PAGE));
    const [c] = (await structuredReply(peer)).map(decode);
    expect(c!.runs).toEqual([
      [2 * PAGE, 0],
      [2 * PAGE, 1],
      [6 * PAGE, 0],
      [PAGE, 1],
      [PAGE, 0],
    ]);
  });

  it('an empty-leaf SET selects nothing, and block status is then refused with EINVAL on a live connection', async () => {
    const { peer, ids } = await negotiated('layered', ['qemu:', 'base:']);
    expect(ids.size).toBe(0);
    peer.send(request(K.CMD_BLOCK_STATUS, 0, 3n, 0, PAGE));
    const [err] = await structuredReply(peer);
    expect([err!.type, err!.payload.readUInt32BE(0)]).toEqual([K.REPLY_TYPE_ERROR, K.NBD_EINVAL]);
    peer.send(request(K.CMD_READ, 0, 4n, 0, 512));
    expect((await structuredReply(peer)).length).toBeGreaterThan(0);
  });

  it('matches a per-page model of both contexts for random layouts and ranges', async () => {
    const { peer, ids } = await negotiated('layered', [ALLOCATION_DEPTH, K.BASE_ALLOCATION]);
    let cookie = 100n;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: PAGES, maxLength: PAGES }),
        fc.integer({ min: 0, max: SIZE - 1 }),
        fc.integer({ min: 1, max: SIZE }),
        fc.boolean(),
        async (depths, offset, want, reqOne) => {
          depths.forEach((d, i) => (layered.depth[i] = d));
          const length = Math.min(want, SIZE - offset);
          peer.send(request(K.CMD_BLOCK_STATUS, reqOne ? K.CMD_FLAG_REQ_ONE : 0, ++cookie, offset, length));
          const chunks = (await structuredReply(peer)).map(decode);
          const depthModel = modelRuns((p) => depths[p]!, offset, length);
          const byId = new Map(chunks.map((c) => [c.id, c.runs]));
          expect(byId.get(ids.get(ALLOCATION_DEPTH)!)).toEqual(reqOne ? depthModel.slice(0, 1) : depthModel);
          expect(byId.get(ids.get(K.BASE_ALLOCATION)!)).toEqual([[length, K.STATE_HOLE | K.STATE_ZERO]]);
        },
      ),
      { numRuns: propertyRuns(200, 40) },
    );
  });
});
