import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from '../qcowlike/index.js';
import { MovableDevice } from '../migrate/movable-device.js';

/** What a server lends the work it runs on its volumes: its export table, its pools. */
export interface LiveVolumesHost {
  /** The export name a volume is served under now. */
  exportName(pool: string, volume: string): string;
  /** Holds an export open without counting as a client, under the canonical name it resolved to; undefined when nothing answers to the name. */
  holdExport(name: string): Promise<{ name: string; device: unknown; release(): Promise<void> } | undefined>;
  clientsOf(name: string): number;
  /** A pool this server serves, or opens now and serves from then on. */
  adopt(pool: string): Promise<Pool>;
  /** Makes `oldName` stand for the volume at its new place (see PoolExportSource.alias). */
  alias(oldName: string, to: { pool: string; volume: string; active: boolean } | undefined): void;
}

export interface HeldVolume {
  /** The device the export serves the volume through: a migration interposes on it and moves it. */
  device: MovableDevice;
  /** The export name its clients use, which it was held under (kept after a move, as an alias). */
  exportName: string;
  release(): Promise<void>;
}

/**
 * The volumes a server exports, as the work it runs on them (a hot
 * migration, an online push) reaches them: held open so that every
 * connection, present and future, shares the one device the work
 * controls, with the connection count and the pools behind them.
 */
export class LiveVolumes {
  constructor(private readonly host: LiveVolumesHost) {}

  async acquire(pool: string, volume: string): Promise<HeldVolume> {
    const held = await this.host.holdExport(this.host.exportName(pool, volume));
    if (!held) throw new Error(`volume '${pool}/${volume}' is not exported by this server (it is missing, incomplete, or left out by serve --export)`);
    if (!(held.device instanceof MovableDevice)) {
      await held.release();
      throw new Error(`export '${held.name}' is not a pool volume`);
    }
    // Not the volume's own name when an earlier move left it under the name of its first place: the clients' name is what a move keeps.
    return { device: held.device, exportName: held.name, release: held.release };
  }

  /** Clients connected to the volume now (work holding it is not counted). */
  clients(pool: string, volume: string): number {
    return this.host.clientsOf(this.host.exportName(pool, volume));
  }

  /** Resolves once no client is connected under `exportName`; rejects when `signal` fires. */
  async untilNoClients(exportName: string, signal?: AbortSignal): Promise<void> {
    while (this.host.clientsOf(exportName) > 0) await sleep(100, undefined, signal ? { signal } : undefined);
  }

  adopt(pool: string): Promise<Pool> {
    return this.host.adopt(pool);
  }

  alias(oldName: string, to: { pool: string; volume: string; active: boolean } | undefined): void {
    this.host.alias(oldName, to);
  }
}
