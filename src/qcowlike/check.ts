import { dataChecksum, dataChecksums } from './checksum.js';
import { DoubleWrite } from './doublewrite.js';
import type { PoolCore } from './core.js';
import { blockOwner, ENTRY_ALLOC, ENTRY_SUMS, isInherited, readHost, readL1 } from './geometry.js';
import type { PoolHeader } from './header.js';
import type { Layer } from './layer.js';
import { BlockType } from './metablock.js';
import type { CheckProblem, CheckReport } from './types.js';

/**
 * Walks every structure of a pool (after a checkpoint, so the journal is
 * empty): every cluster the catalog, the layer maps and the data reference is
 * claimed once; a second claim is an overlap, a claim outside the data area
 * is dangling, a claimed cluster the bitmap calls free is a bitmap error, and
 * a cluster the bitmap calls used that nobody claims is a leak. Every
 * metadata block and every allocated data sub-cluster is read and verified.
 * Repair fixes only the bitmap (leaks and wrongly-free clusters) and, with
 * redundancy below, bad copies that another copy's checksum proves wrong: the
 * rest cannot be fixed without guessing, so it is reported with its place.
 * Without repair (or on a read-only pool) a bad copy with a good one beside it
 * is reported *pending*: found, servable, not yet rewritten.
 *
 * A map table that cannot be read may reference clusters nobody else claims:
 * while any is damaged, such clusters are held in quarantine (kept in use,
 * listed, never freed by repair), so that whatever it pointed at can still be
 * salvaged. Each held cluster is charged to the damaged table whose raw bytes
 * name it, or else to all of them.
 *
 * Shared maps: a table belongs to the layer in its trailer, which claims and
 * walks it; a layer that reaches it through its L1 must descend from that
 * owner. An inherited entry claims nothing: its cluster must be claimed as
 * data by an ancestor of the layer.
 */
export async function checkPool(
  pool: PoolCore & { header: PoolHeader },
  layers: Layer[],
  catalogRuns: Array<{ start: number; clusters: number }>,
  repair: boolean,
  volumeOf: (layer: number) => string | undefined = () => undefined,
  copiesRegion?: { start: number; clusters: number },
): Promise<CheckReport> {
  const { store, alloc, geo, header, dev } = pool;
  const C = geo.clusterSize;
  const problems: CheckProblem[] = [];
  const owners = new Map<number, string>();
  /** The layer whose data claim each data cluster is. */
  const dataOwner = new Map<number, number>();
  const inherited: Array<{ host: number; layer: Layer; what: string; voff: number }> = [];
  let repaired = 0;
  let corruptBlocks = 0;
  // A check that may not write still asks the redundancy below for a good copy, to tell a pending repair from lost data.
  const defer = !repair || pool.readOnly;

  const claim = (cluster: number, what: string, layer?: number): boolean => {
    if (cluster < header.dataStart || cluster >= header.totalClusters) {
      problems.push({ kind: 'dangling', hostOffset: cluster * C, layer, message: `${what} points at cluster ${cluster}, outside the data area`, repaired: false });
      return false;
    }
    const prev = owners.get(cluster);
    if (prev) {
      problems.push({ kind: 'overlap', hostOffset: cluster * C, layer, message: `cluster ${cluster} is claimed twice: by ${prev} and by ${what}`, repaired: false });
      return false;
    }
    owners.set(cluster, what);
    if (!alloc.isUsed(cluster)) {
      if (repair) {
        alloc.repairBit(cluster, true);
        repaired++;
      }
      problems.push({ kind: 'bitmap', hostOffset: cluster * C, layer, message: `cluster ${cluster} (${what}) is in use but marked free`, repaired: repair });
    }
    return true;
  };

  catalogRuns.forEach((run, i) => {
    for (let c = run.start; c < run.start + run.clusters; c++) claim(c, i === 0 ? 'the catalog' : 'the copy of the catalog');
  });
  if (copiesRegion) for (let c = copiesRegion.start; c < copiesRegion.start + copiesRegion.clusters; c++) claim(c, 'the copies region');
  /** Tables that failed to load, and the clusters their raw bytes still name. */
  const damaged: Array<{ what: string; hostOffset: number; names: Set<number> }> = [];
  const inData = (c: number): boolean => c >= header.dataStart && c < header.totalClusters;
  const rawNames = async (cluster: number, kind: 'L1' | 'L2', layerId: number): Promise<Set<number>> => {
    const raw = Buffer.alloc(C);
    const names = new Set<number>();
    try {
      await dev.read(raw, cluster * C);
    } catch {
      return names;
    }
    if (kind === 'L2') {
      for (let e = 0; e < geo.entriesPerL2; e++) if (inData(readHost(raw, e * geo.entrySize))) names.add(readHost(raw, e * geo.entrySize));
      return names;
    }
    // An L1's tables may still verify on their own: their data is then named too.
    for (let i = 0; i < geo.entriesPerL1Block; i++) {
      const l2c = readL1(raw, i);
      if (!inData(l2c)) continue;
      names.add(l2c);
      const l2 = await store.load(l2c, BlockType.L2, layerId).catch(() => undefined);
      if (l2) for (let e = 0; e < geo.entriesPerL2; e++) if (inData(readHost(l2, e * geo.entrySize))) names.add(readHost(l2, e * geo.entrySize));
    }
    return names;
  };

  for (const layer of layers) {
    const vol = volumeOf(layer.id);
    const name = vol === undefined ? `layer ${layer.id}` : `volume '${vol}' (layer ${layer.id})`;
    for (let b = 0; b < layer.rec.l1Blocks; b++) claim(layer.rec.l1Start + b, `L1 block ${b} of ${name}`, layer.id);
    for (let b = 0; b < layer.rec.l1Blocks; b++) {
      const l1c = layer.rec.l1Start + b;
      let l1: Buffer;
      try {
        l1 = await store.load(l1c, BlockType.L1, layer.id);
      } catch (err) {
        corruptBlocks++;
        problems.push({ kind: 'checksum', hostOffset: l1c * C, layer: layer.id, volume: vol, message: `L1 block ${b} of ${name}: ${(err as Error).message}`, repaired: false });
        damaged.push({ what: `L1 block ${b} of ${name} at offset ${l1c * C}`, hostOffset: l1c * C, names: await rawNames(l1c, 'L1', layer.id) });
        continue;
      }
      for (let i = 0; i < geo.entriesPerL1Block; i++) {
        const l2c = readL1(l1, i);
        if (l2c === 0) continue;
        const firstVc = (b * geo.entriesPerL1Block + i) * geo.entriesPerL2;
        const shared = store.peek(l2c) ?? (await store.load(l2c, BlockType.L2, undefined).catch(() => undefined));
        if (shared && blockOwner(shared) !== layer.id) {
          const owner = blockOwner(shared);
          if (!layer.descendsFrom(owner)) problems.push({ kind: 'dangling', hostOffset: l2c * C, layer: layer.id, volume: vol, virtualOffset: firstVc * C, message: `L2 table at offset ${l2c * C} for virtual offset ${firstVc * C} of ${name} belongs to layer ${owner}, which is not one of its ancestors`, repaired: false });
          continue;
        }
        if (!claim(l2c, `L2 table for virtual offset ${firstVc * C} of ${name}`, layer.id)) continue;
        let l2: Buffer;
        try {
          l2 = await store.load(l2c, BlockType.L2, layer.id);
        } catch (err) {
          corruptBlocks++;
          problems.push({ kind: 'checksum', hostOffset: l2c * C, layer: layer.id, volume: vol, virtualOffset: firstVc * C, message: `L2 table of ${name}: ${(err as Error).message}`, repaired: false });
          damaged.push({ what: `L2 table at offset ${l2c * C} (${name}, virtual offset ${firstVc * C})`, hostOffset: l2c * C, names: await rawNames(l2c, 'L2', layer.id) });
          continue;
        }
        await checkTable(l2, firstVc);
      }
    }

    async function checkTable(l2: Buffer, firstVc: number): Promise<void> {
      const data = Buffer.alloc(C);
      const mirrored = dev.redundancy?.mirrored === true;
      for (let e = 0; e < geo.entriesPerL2; e++) {
        const at = e * geo.entrySize;
        const host = readHost(l2, at);
        if (host === 0) continue;
        const voff = (firstVc + e) * C;
        if (isInherited(l2, at)) {
          inherited.push({ host, layer, what: name, voff });
          continue;
        }
        if (!claim(host, `data at virtual offset ${voff} of ${name}`, layer.id)) continue;
        dataOwner.set(host, layer.id);
        const bits = l2.readUInt32LE(at + ENTRY_ALLOC);
        if (bits === 0) continue;
        await dev.read(data, host * C);
        let verified = 0;
        for (let s = 0; s < geo.subclusters; s++) {
          if (!(bits & (1 << s))) continue;
          const sc = data.subarray(s * geo.subclusterSize, (s + 1) * geo.subclusterSize);
          const sum = l2.readUInt32LE(at + ENTRY_SUMS + 4 * s);
          if (dataChecksum(sc) === sum) {
            verified |= 1 << s;
            continue;
          }
          corruptBlocks++;
          const hostOffset = host * C + s * geo.subclusterSize;
          // With redundancy below (RAID), a copy that verifies is the right one: rewrite the bad member from it.
          if (await store.fromRedundancy(sc, hostOffset, (b) => dataChecksum(b) === sum, defer)) {
            if (!defer) {
              repaired++;
              pool.counters.repairedData++;
            }
            problems.push(copyProblem(hostOffset, voff + s * geo.subclusterSize, 'one copy'));
            continue;
          }
          problems.push({
            kind: 'checksum',
            hostOffset: host * C + s * geo.subclusterSize,
            layer: layer.id,
            volume: vol,
            virtualOffset: voff + s * geo.subclusterSize,
            message: `data of ${name} at virtual offset ${voff + s * geo.subclusterSize} (host offset ${host * C + s * geo.subclusterSize}) fails its checksum`,
            repaired: false,
          });
        }
        // A sub-cluster recovered above had every differing replica rewritten (or recorded pending) already.
        if (mirrored && verified !== 0) await checkReplicas(l2, at, host, voff, data, verified);
      }
    }

    /** A data sub-cluster that failed its checksum on `where` while another copy verifies: rewritten, or pending. */
    function copyProblem(hostOffset: number, virtualOffset: number, where: string): CheckProblem {
      return {
        kind: 'checksum',
        hostOffset,
        layer: layer.id,
        volume: vol,
        virtualOffset,
        message: defer
          ? `data of ${name} at virtual offset ${virtualOffset} failed its checksum on ${where}; another copy verifies (repair pending: a repairing check rewrites it)`
          : `data of ${name} at virtual offset ${virtualOffset} failed its checksum${where === 'one copy' ? '' : ` on ${where}`}; rewritten from a copy that verifies`,
        repaired: !defer,
        ...(defer ? { pending: true } : {}),
      };
    }

    /**
     * Mirrors: the normal read picks one replica per chunk, so a bad sector on
     * the other would wait, unseen, for the day it is the only copy left (or
     * for a scrub to copy it over the good one). Verify every replica of the
     * sub-clusters whose good data is known.
     */
    async function checkReplicas(l2: Buffer, at: number, host: number, voff: number, good: Buffer, verified: number): Promise<void> {
      const r = dev.redundancy!;
      const S = geo.subclusterSize;
      const replica = Buffer.alloc(C);
      const sums = new Uint32Array(geo.subclusters);
      // Copy 0 is the normal read, verified above: the others are the replicas it did not pick.
      for (let copy = 1; copy < r.copies(host * C, C); copy++) {
        try {
          await r.readCopy(replica, host * C, copy);
        } catch {
          continue;
        }
        // The whole cluster at once: the SIMD kernel hashes four sub-clusters together.
        dataChecksums(replica, S, geo.subclusters, sums);
        for (let s = 0; s < geo.subclusters; s++) {
          if (!(verified & (1 << s))) continue;
          if (sums[s] === l2.readUInt32LE(at + ENTRY_SUMS + 4 * s)) continue;
          corruptBlocks++;
          const hostOffset = host * C + s * S;
          const virtualOffset = voff + s * S;
          const sc = good.subarray(s * S, (s + 1) * S);
          await r.repair(sc, hostOffset, { defer });
          if (!defer) {
            repaired++;
            pool.counters.repairedData++;
          }
          problems.push(copyProblem(hostOffset, virtualOffset, `mirror copy ${copy}`));
        }
      }
    }
  }

  for (const r of inherited) {
    const owner = dataOwner.get(r.host);
    if (owner !== undefined && r.layer.descendsFrom(owner)) continue;
    problems.push({ kind: 'dangling', hostOffset: r.host * C, layer: r.layer.id, virtualOffset: r.voff, message: `inherited data at virtual offset ${r.voff} of ${r.what} points at cluster ${r.host}, which ${owner === undefined ? 'no layer holds as data' : `layer ${owner} holds, not an ancestor`}`, repaired: false });
  }

  // Metadata blocks read from a good copy while the pool could not write (at open, by reads, or in this walk).
  const reported = new Set(problems.map((p) => p.hostOffset));
  for (const [hostOffset, what] of store.pendingRepairs) {
    if (reported.has(hostOffset)) continue;
    corruptBlocks++;
    problems.push({
      kind: 'checksum',
      hostOffset,
      message: `${what} (host offset ${hostOffset}) failed its checksum on one copy; another copy verifies (repair pending: a repairing check rewrites it)`,
      repaired: false,
      pending: true,
    });
  }

  // Reported only: a checkpoint of a volume may be writing the area right now. The next open clears it.
  const dwWhy = await new DoubleWrite(dev, header.dwStart, header.dwClusters, C).headDamage().catch((err: unknown) => (err as Error).message);
  if (dwWhy !== null) problems.push({ kind: 'journal', hostOffset: header.dwStart * C, message: `double-write head at offset ${header.dwStart * C} is damaged (${dwWhy}); the next read-write open clears it`, repaired: false });

  let leaked = 0;
  const held = new Map<(typeof damaged)[number] | undefined, number[]>();
  for (let c = header.dataStart; c < header.totalClusters; c++) {
    if (!alloc.isUsed(c) || owners.has(c)) continue;
    if (damaged.length > 0) {
      const by = damaged.find((d) => d.names.has(c));
      const list = held.get(by) ?? [];
      list.push(c);
      held.set(by, list);
      continue;
    }
    leaked++;
    if (repair) {
      alloc.repairBit(c, false);
      repaired++;
    }
    problems.push({ kind: 'leak', hostOffset: c * C, message: `cluster ${c} is marked in use but nothing refers to it`, repaired: repair });
  }
  let quarantined = 0;
  for (const [by, clusters] of held) {
    quarantined += clusters.length;
    const because = by ? `${by.what} is damaged` : `${damaged.map((d) => d.what).join('; ')} ${damaged.length === 1 ? 'is' : 'are'} damaged and may reference them`;
    problems.push({
      kind: 'quarantine',
      hostOffset: by?.hostOffset,
      clusters,
      message: `${clusters.length} cluster${clusters.length === 1 ? '' : 's'} held in quarantine because ${because}: ${runs(clusters)}`,
      repaired: false,
    });
  }
  const pendingRepairs = problems.filter((p) => p.pending === true).length;
  return { problems, clustersChecked: owners.size, leakedClusters: leaked, quarantinedClusters: quarantined, corruptBlocks, repaired, pendingRepairs };
}

/** Clusters as runs, "12-15, 40". */
function runs(clusters: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < clusters.length; ) {
    let j = i;
    while (j + 1 < clusters.length && clusters[j + 1] === clusters[j]! + 1) j++;
    out.push(i === j ? `${clusters[i]}` : `${clusters[i]}-${clusters[j]}`);
    i = j + 1;
  }
  return `clusters ${out.join(', ')}`;
}
