import type { VolumeInfo } from '../src/qcowlike/index.js';
import type { ChainNode, TemplateInfo } from '../src/snapshot/index.js';
import type { PoolNames } from '../src/host/export-ref.js';
import { localListener, type ServedEndpoint } from '../src/host/served-endpoint.js';
import { NbdDevice } from '../src/nbd/index.js';
import { volumeRuns } from '../src/host/volume-runs.js';
import type { ControlClient } from '../src/host/control-client.js';
import { IncompleteVolumeError } from './incomplete.js';
import { formatSize } from './size.js';

/**
 * Import and export on a pool that `strata serve` holds: the volume is set up
 * over the pool's control socket (created, checked, deleted on failure) and
 * its data moves over the server's own NBD export of it, so the server keeps
 * the pool and every other client keeps its I/O going.
 */

/** Where the served volume is exported, connected; refuses a volume that cannot be reached the way this client can connect. */
export async function connectServed(client: ControlClient, poolName: string, volume: string, write: boolean): Promise<{ device: NbdDevice; endpoint: ServedEndpoint }> {
  const ref = `${poolName}/${volume}`;
  const endpoint = (await client.request({ op: 'nbd-endpoint', volume })).result as ServedEndpoint;
  if (endpoint.exportName === null) throw new Error(`pool '${poolName}' is served, and its server does not export ${ref} (serve --export picks what is served, and an incomplete volume is served only with --allow-incomplete): stop the server, or serve ${ref} too`);
  if (write && endpoint.readOnly) throw new Error(`pool '${poolName}' is served read-only: cannot import into ${ref}`);
  const at = localListener(endpoint);
  if (!at) {
    // --tls require covers the Unix socket too, and this command holds none of the server's credentials.
    if (endpoint.tls === 'require') throw new Error(`pool '${poolName}' is served with TLS required on every listener: import and export of a served volume need one that takes plain connections (serve --tls on), or the server stopped`);
    throw new Error(`pool '${poolName}' is served, but its server is not listening yet: try again`);
  }
  const device = await NbdDevice.connect({ ...at, export: endpoint.exportName });
  return { device, endpoint };
}

/** The volume's record, or null when the pool has none by that name. */
export async function servedVolume(client: ControlClient, volume: string): Promise<VolumeInfo | null> {
  const list = (await client.request({ op: 'volume-list' })).result as VolumeInfo[];
  return list.find((v) => v.name === volume) ?? null;
}

/** The names a served pool holds, asked over its control socket. */
export function servedNames(client: ControlClient): PoolNames {
  return {
    isVolume: async (name) => (await servedVolume(client, name)) !== null,
    isTemplate: async (name) => ((await client.request({ op: 'template-list' })).result as TemplateInfo[]).some((t) => t.name === name),
    hasSnapshot: async (volume, snapshot) => {
      // The volume's tree holds its snapshots (and those of its clones, by their own names).
      const { tree } = (await client.request({ op: 'snapshot-list', volume })).result as { tree: ChainNode };
      const wanted = `${volume}@${snapshot}`;
      const found = (n: ChainNode): boolean => (n.kind === 'snapshot' && n.name === wanted) || n.children.some(found);
      return found(tree);
    },
  };
}

export async function servedInfo(client: ControlClient, poolName: string, volume: string, allowIncomplete: boolean): Promise<VolumeInfo> {
  const info = (await client.request({ op: 'volume-info', volume })).result as VolumeInfo;
  if (info.incomplete && !allowIncomplete) throw new IncompleteVolumeError(poolName, volume, '--allow-incomplete exports what it holds');
  return info;
}

/** Refuses an import into a volume someone else is using (asked once this import is connected): their writes and the import's would interleave. */
export async function refuseConnected(client: ControlClient, volume: string, ref: string): Promise<void> {
  const endpoint = (await client.request({ op: 'nbd-endpoint', volume })).result as ServedEndpoint;
  // This import's own connection is one of them.
  const others = endpoint.clients - 1;
  if (others > 0) throw new Error(`volume ${ref} has ${others} connected client${others === 1 ? '' : 's'}: an import into a served volume needs it unused (disconnect ${others === 1 ? 'it' : 'them'}, or import into a new volume)`);
}

/** Whether any byte of the export is data (zero runs and holes do not count), by block status: nothing is read. */
export async function exportHoldsData(device: NbdDevice): Promise<boolean> {
  for await (const run of volumeRuns(device)) if (!run.zero) return true;
  return false;
}

export function sizeCheck(info: VolumeInfo, ref: string, file: string, fileSize: number | null, wanted: number | undefined, sizeText: string | undefined): void {
  if (wanted !== undefined && wanted !== info.size) throw new Error(`volume ${ref} exists with size ${formatSize(info.size)}; --size ${sizeText} only applies when import creates it`);
  if (fileSize !== null && info.size < fileSize) throw new Error(`${file} (${formatSize(fileSize)}) does not fit in ${ref} (${formatSize(info.size)})`);
}

/**
 * Connects to a served volume for an import and runs `write` on its export:
 * a volume that existed must be unused and, unless forced, hold no data.
 * Whatever fails, the connection ends and `dropCreated` removes what the
 * import created.
 */
export async function writeServed<T>(control: ControlClient, a: { poolName: string; name: string; ref: string; exists: boolean; force: boolean }, dropCreated: () => Promise<void>, write: (device: NbdDevice) => Promise<T>): Promise<T> {
  let device: NbdDevice;
  try {
    device = (await connectServed(control, a.poolName, a.name, true)).device;
  } catch (err) {
    await dropCreated();
    throw err;
  }
  try {
    if (a.exists) {
      await refuseConnected(control, a.name, a.ref);
      if (!a.force && (await exportHoldsData(device))) throw new Error(`volume ${a.ref} holds data; use --force to overwrite it`);
    }
    const result = await write(device);
    await device.flush();
    await device.close();
    return result;
  } catch (err) {
    await device.close().catch(() => undefined);
    await dropCreated();
    throw err;
  }
}
