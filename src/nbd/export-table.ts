import type { BlockDevice } from '../blockdev/index.js';
import type { ExportSource, OpenedExport } from './exports.js';
import { RequestOrder } from './request-order.js';

/** An export as the connections using it share it: one device, one ordering of overlapping requests. */
export interface ServedExport {
  readonly name: string;
  /** What the table knows this opening by: the name, and what stood behind it when it was opened. */
  readonly key: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly description: string | undefined;
  readonly order: RequestOrder;
}

interface Entry {
  canonical: string;
  refs: number;
  /** Of the refs, those that are not connections: work the server runs on the export (a migration holding it open). */
  holds: number;
  ready: Promise<ServedExport & { opened: OpenedExport }>;
}

/**
 * Opens each export once and shares it between connections, so a flush on one
 * connection reaches the same device every other connection wrote through
 * (what CAN_MULTI_CONN promises), and a file is locked once, not per
 * connection. The export is released when its last connection ends.
 * When a name comes to stand for something else while open (a snapshot
 * deleted and made again, a volume turned into a template), new
 * connections open the new one; those already connected keep theirs.
 */
export class ExportTable {
  private readonly entries = new Map<string, Entry>();
  /** Releases still running: a reopen waits for them, or it would find the file still locked. */
  private readonly closing = new Map<string, Promise<void>>();

  constructor(
    private readonly source: ExportSource,
    private readonly forceReadOnly: boolean,
  ) {}

  /**
   * Resolves undefined when no export answers to `name`. A `hold` keeps the
   * export open like a connection without counting as a client.
   */
  async acquire(name: string, hold = false): Promise<ServedExport | undefined> {
    const canonical = await this.source.resolve(name);
    if (canonical === undefined) return undefined;
    const identity = (await this.source.identity?.(canonical)) ?? '';
    const key = `${canonical}\0${identity}`;
    let entry = this.entries.get(key);
    if (!entry) {
      const prior = this.closing.get(canonical) ?? Promise.resolve();
      const ready = prior.then(() => this.source.open(canonical)).then((opened) => ({
        name: canonical,
        key,
        device: opened.device,
        readOnly: this.forceReadOnly || opened.readOnly || opened.device.readOnly,
        description: opened.description,
        order: new RequestOrder(),
        opened,
      }));
      const made: Entry = { canonical, refs: 0, holds: 0, ready };
      entry = made;
      this.entries.set(key, made);
      ready.catch(() => {
        if (this.entries.get(key) === made) this.entries.delete(key);
      });
    }
    entry.refs++;
    if (hold) entry.holds++;
    try {
      return await entry.ready;
    } catch (err) {
      entry.refs--;
      if (hold) entry.holds--;
      throw err;
    }
  }

  async release(exp: ServedExport, hold = false): Promise<void> {
    const entry = this.entries.get(exp.key);
    if (entry && hold) entry.holds--;
    if (!entry || --entry.refs > 0) return;
    this.entries.delete(exp.key);
    const done = closeServed(await entry.ready);
    // Another opening of the same name may be closing too: a reopen waits for both.
    const settled = Promise.all([this.closing.get(exp.name), done.catch(() => undefined)]).then(() => undefined);
    this.closing.set(exp.name, settled);
    void settled.then(() => {
      if (this.closing.get(exp.name) === settled) this.closing.delete(exp.name);
    });
    await done;
  }

  /** Resolves once every release has finished (server shutdown). */
  async idle(): Promise<void> {
    await Promise.all(this.closing.values());
  }

  /** Connections using an export now (0 when it is not open). */
  clients(canonical: string): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.canonical === canonical) n += e.refs - e.holds;
    return n;
  }

  get openCount(): number {
    return this.entries.size;
  }
}

async function closeServed(served: { device: BlockDevice; opened: OpenedExport }): Promise<void> {
  try {
    await served.device.flush();
  } finally {
    await served.opened.release();
  }
}
