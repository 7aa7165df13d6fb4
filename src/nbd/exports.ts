import type { BlockDevice } from '../blockdev/index.js';

/** One line of NBD_OPT_LIST. */
export interface ExportListing {
  name: string;
  description?: string;
}

/** An export opened for serving; `release` is called once, when the last connection using it ends. */
export interface OpenedExport {
  device: BlockDevice;
  readOnly: boolean;
  description?: string;
  release(): Promise<void>;
}

/**
 * Where a server finds its exports: a pool, a file, memory. Names are opaque
 * keys looked up in a table; a source never turns a client's name into a path.
 */
export interface ExportSource {
  list(): Promise<ExportListing[]>;
  /** The canonical name `name` refers to ('' is the default export), or undefined when there is none. */
  resolve(name: string): Promise<string | undefined>;
  /**
   * What a canonical name stands for now, when that can change under the
   * same name (a snapshot deleted and made again): an opening is shared
   * only by connections that found the same identity. Without it, a name
   * is always the same thing.
   */
  identity?(canonical: string): Promise<string | undefined>;
  /** Opens a canonical name returned by resolve. The server opens each name once and shares it between connections. */
  open(canonical: string): Promise<OpenedExport>;
}

export interface StaticExport {
  name: string;
  description?: string;
  readOnly?: boolean;
  open(): Promise<BlockDevice>;
  /** Called when the last connection ends; closes the device unless given (a device the caller keeps open). */
  release?(device: BlockDevice): Promise<void>;
}

/** A fixed table of exports; the first one (or `defaultName`) also answers to the empty name. */
export class StaticExportSource implements ExportSource {
  private readonly table = new Map<string, StaticExport>();
  private readonly defaultName: string | undefined;

  constructor(exports: StaticExport[], defaultName?: string) {
    for (const e of exports) {
      if (this.table.has(e.name)) throw new Error(`export name '${e.name}' is given twice`);
      this.table.set(e.name, e);
    }
    this.defaultName = defaultName ?? exports[0]?.name;
  }

  async list(): Promise<ExportListing[]> {
    return [...this.table.values()].map((e) => (e.description === undefined ? { name: e.name } : { name: e.name, description: e.description }));
  }

  async resolve(name: string): Promise<string | undefined> {
    if (this.table.has(name)) return name;
    return name === '' ? this.defaultName : undefined;
  }

  async open(canonical: string): Promise<OpenedExport> {
    const e = this.table.get(canonical);
    if (!e) throw new Error(`no export named '${canonical}'`);
    const device = await e.open();
    const opened: OpenedExport = { device, readOnly: (e.readOnly ?? false) || device.readOnly, release: () => (e.release ? e.release(device) : device.close()) };
    if (e.description !== undefined) opened.description = e.description;
    return opened;
  }
}
