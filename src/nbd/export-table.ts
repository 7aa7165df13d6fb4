import type { BlockDevice } from '../blockdev/index.js';
import type { ExportSource, OpenedExport } from './exports.js';
import { RequestOrder } from './request-order.js';

/** An export as the connections using it share it: one device, one ordering of overlapping requests. */
export interface ServedExport {
  readonly name: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly description: string | undefined;
  readonly order: RequestOrder;
}

interface Entry {
  refs: number;
  ready: Promise<ServedExport & { opened: OpenedExport }>;
}

/**
 * Opens each export once and shares it between connections, so a flush on one
 * connection reaches the same device every other connection wrote through
 * (what CAN_MULTI_CONN promises), and a file is locked once, not per
 * connection. The export is released when its last connection ends.
 */
export class ExportTable {
  private readonly entries = new Map<string, Entry>();
  /** Releases still running: a reopen waits for them, or it would find the file still locked. */
  private readonly closing = new Map<string, Promise<void>>();

  constructor(
    private readonly source: ExportSource,
    private readonly forceReadOnly: boolean,
  ) {}

  /** Resolves undefined when no export answers to `name`. */
  async acquire(name: string): Promise<ServedExport | undefined> {
    const canonical = await this.source.resolve(name);
    if (canonical === undefined) return undefined;
    let entry = this.entries.get(canonical);
    if (!entry) {
      const prior = this.closing.get(canonical) ?? Promise.resolve();
      const ready = prior.then(() => this.source.open(canonical)).then((opened) => ({
        name: canonical,
        device: opened.device,
        readOnly: this.forceReadOnly || opened.readOnly || opened.device.readOnly,
        description: opened.description,
        order: new RequestOrder(),
        opened,
      }));
      entry = { refs: 0, ready };
      this.entries.set(canonical, entry);
      ready.catch(() => {
        if (this.entries.get(canonical) === entry) this.entries.delete(canonical);
      });
    }
    entry.refs++;
    try {
      return await entry.ready;
    } catch (err) {
      entry.refs--;
      throw err;
    }
  }

  async release(exp: ServedExport): Promise<void> {
    const entry = this.entries.get(exp.name);
    if (!entry || --entry.refs > 0) return;
    this.entries.delete(exp.name);
    const done = closeServed(await entry.ready);
    const settled = done.catch(() => undefined);
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
    return this.entries.get(canonical)?.refs ?? 0;
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
