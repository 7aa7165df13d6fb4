import fs from 'node:fs';
import path from 'node:path';
import { syncDirectory } from './durable-json.js';

/**
 * Pools are registered by name under the home directory, one small JSON file
 * each (HOME/pools/NAME.json), so `pool0/vm1` names a volume from anywhere.
 * Names are checked before they touch the file system: a name never becomes
 * an arbitrary path.
 */

export const RAID_LEVELS = ['0', '1', '5', '6', '10'] as const;
export type RaidLevel = (typeof RAID_LEVELS)[number];

/** What a pool lives on. File paths inside HOME are stored relative to it, so a home directory can be moved. */
export type PoolBacking =
  | { kind: 'file'; path: string }
  | { kind: 'raid'; level: RaidLevel; members: string[]; chunk: number }
  /** A device striped over RADOS objects: `image` names it in Ceph pool `cephPool`; credentials come from the Ceph config and keyring. */
  | { kind: 'rados'; cephPool: string; image: string; conf?: string; id?: string };

export interface PoolRecord {
  name: string;
  backing: PoolBacking;
  created: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const RECORD_VERSION = 1;

export function checkName(kind: 'pool' | 'volume' | 'snapshot' | 'template', name: string): string {
  if (!NAME.test(name)) {
    throw new Error(`invalid ${kind} name '${name}' (1–64 letters, digits, '.', '_' or '-', starting with a letter or digit)`);
  }
  return name;
}

/** Splits `POOL/VOL`, checking both names. */
export function parseVolumeRef(ref: string): { pool: string; volume: string } {
  if (ref.includes('@')) throw new Error(`'${ref}' names a snapshot; this command takes POOL/VOL`);
  const parts = ref.split('/');
  if (parts.length !== 2) throw new Error(`invalid volume '${ref}' (expected POOL/VOL, e.g. pool0/vm1)`);
  return { pool: checkName('pool', parts[0]!), volume: checkName('volume', parts[1]!) };
}

export class Registry {
  /** As the user gave it, for messages. */
  readonly home: string;
  private readonly dir: string;

  constructor(home: string) {
    this.home = home;
    this.dir = path.join(path.resolve(home), 'pools');
  }

  /** Where a new file-backed pool goes when no --path is given. */
  defaultPoolPath(name: string): string {
    return path.join(path.resolve(this.home), `${checkName('pool', name)}.pool`);
  }

  /** Registered pool names, sorted; a record may still turn out damaged when read with get(). */
  names(): string[] {
    let files: string[];
    try {
      files = fs.readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return files
      .filter((f) => f.endsWith('.json') && NAME.test(f.slice(0, -5)))
      .map((f) => f.slice(0, -5))
      .sort((a, b) => a.localeCompare(b));
  }

  /** Every record that reads back whole; damaged ones are left to get() to report. */
  readable(): PoolRecord[] {
    const out: PoolRecord[] = [];
    for (const name of this.names()) {
      try {
        out.push(this.get(name));
      } catch {
        // Reported by the commands that name this pool.
      }
    }
    return out;
  }

  has(name: string): boolean {
    return fs.existsSync(this.recordPath(name));
  }

  get(name: string): PoolRecord {
    let text: string;
    try {
      text = fs.readFileSync(this.recordPath(name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`pool '${name}' not found in ${this.home}`);
      throw err;
    }
    return this.decode(name, text);
  }

  /** Absolute paths of a RAID-backed pool's members. */
  memberPaths(record: PoolRecord): string[] {
    if (record.backing.kind !== 'raid') throw new Error(`pool '${record.name}' is not RAID-backed`);
    const home = path.resolve(this.home);
    return record.backing.members.map((m) => path.resolve(home, m));
  }

  /** Absolute path of a file-backed pool. */
  filePath(record: PoolRecord): string {
    if (record.backing.kind !== 'file') throw new Error(`pool '${record.name}' is not file-backed`);
    return path.resolve(path.resolve(this.home), record.backing.path);
  }

  /**
   * Registers a new pool. The record is written to a temporary file, synced,
   * then hard-linked into place: link() refuses an existing name, so two
   * concurrent creates of one name cannot both succeed, and a reader never
   * sees a half-written record.
   */
  add(record: PoolRecord): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const final = this.recordPath(record.name);
    const tmp = this.writeTemp(record);
    try {
      fs.linkSync(tmp, final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`pool '${record.name}' already exists in ${this.home}`);
      throw err;
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    syncDirectory(this.dir);
  }

  /**
   * Rewrites an existing pool's record (a RAID pool's member list after add,
   * replace or remove): written to a temporary file, synced, renamed over the
   * old one and the directory synced, so a reader or a crash sees the old
   * record or the new one, never a mixture.
   */
  replace(record: PoolRecord): void {
    const final = this.recordPath(record.name);
    if (!fs.existsSync(final)) throw new Error(`pool '${record.name}' not found in ${this.home}`);
    const tmp = this.writeTemp(record);
    try {
      fs.renameSync(tmp, final);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    syncDirectory(this.dir);
  }

  /** Writes the record, paths relative to the home where they can be, to a synced temporary file; returns its path. */
  private writeTemp(record: PoolRecord): string {
    const stored: PoolRecord = { ...record, backing: this.relativize(record.backing) };
    const tmp = path.join(this.dir, `.${record.name}.${process.pid}.tmp`);
    const fd = fs.openSync(tmp, 'w', 0o644);
    try {
      fs.writeSync(fd, JSON.stringify({ version: RECORD_VERSION, ...stored }, null, 2) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return tmp;
  }

  remove(name: string): void {
    fs.rmSync(this.recordPath(name));
    syncDirectory(this.dir);
  }

  private recordPath(name: string): string {
    return path.join(this.dir, `${checkName('pool', name)}.json`);
  }

  private relativize(backing: PoolBacking): PoolBacking {
    const home = path.resolve(this.home);
    const rel = (absolute: string): string => {
      const r = path.relative(home, absolute);
      return r !== '' && !r.startsWith('..') && !path.isAbsolute(r) ? r : absolute;
    };
    // Member paths already relative are relative to the home, as stored; a pool file's path to the working directory.
    if (backing.kind === 'raid') return { ...backing, members: backing.members.map((m) => rel(path.resolve(home, m))) };
    // A Ceph config is the host's, not the home's: it stays as given.
    if (backing.kind === 'rados') return backing;
    return { kind: 'file', path: rel(path.resolve(backing.path)) };
  }

  private decode(name: string, text: string): PoolRecord {
    const bad = (why: string): Error => new Error(`pool '${name}': registration ${this.recordPath(name)} is damaged (${why})`);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw bad('not JSON');
    }
    if (typeof raw !== 'object' || raw === null) throw bad('not an object');
    const r = raw as Record<string, unknown>;
    if (r.version !== RECORD_VERSION) throw bad(`unknown version ${String(r.version)}`);
    if (r.name !== name) throw bad(`it names '${String(r.name)}'`);
    const b = r.backing as Record<string, unknown> | null | undefined;
    let backing: PoolBacking;
    if (b?.kind === 'file' && typeof b.path === 'string' && b.path !== '') {
      backing = { kind: 'file', path: b.path };
    } else if (
      b?.kind === 'raid' &&
      RAID_LEVELS.includes(b.level as RaidLevel) &&
      Array.isArray(b.members) &&
      b.members.every((m) => typeof m === 'string') &&
      Number.isSafeInteger(b.chunk)
    ) {
      backing = { kind: 'raid', level: b.level as RaidLevel, members: b.members as string[], chunk: b.chunk as number };
    } else if (b?.kind === 'rados' && typeof b.cephPool === 'string' && b.cephPool !== '' && typeof b.image === 'string' && NAME.test(b.image) && optionalText(b.conf) && optionalText(b.id)) {
      backing = { kind: 'rados', cephPool: b.cephPool, image: b.image, ...(typeof b.conf === 'string' ? { conf: b.conf } : {}), ...(typeof b.id === 'string' ? { id: b.id } : {}) };
    } else {
      throw bad('no valid backing');
    }
    return { name, backing, created: typeof r.created === 'string' ? r.created : '' };
  }
}

function optionalText(v: unknown): boolean {
  return v === undefined || (typeof v === 'string' && v !== '');
}
