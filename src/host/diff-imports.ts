import fs from 'node:fs';
import path from 'node:path';
import type { DiffPoint } from '../snapshot/diff-stream.js';
import { writeJsonDurably } from './durable-json.js';

/**
 * What import-diff remembers about a pool, in HOME/diff-imports/POOL.json
 * (the home, not the pool: the catalog is the format's; this is a note the
 * host keeps beside it):
 *
 * - `pending`: per volume, the stream an import is applying now or was
 *   applying when it was cut short (FROM and TO by UUID, and how far it got).
 *   A re-run of that same stream is allowed over the "FROM plus part of the
 *   stream" state it left, and finishes it.
 * - `snapshots`: which local snapshot stands for which source snapshot. A
 *   snapshot made here gets a UUID of its own, so the stream's TO UUID is
 *   recorded against it: the next incremental names that UUID as its FROM.
 *   Read both ways and across the home's pools (sameAs), since the two hold
 *   the same bytes.
 *
 * Every change rewrites the file whole (temp file, fsync, rename), so a crash
 * leaves the old note or the new one. Changes are synchronous: in one process
 * (a command, or the server that holds the pool) they never interleave.
 */

export interface PendingImport {
  from: DiffPoint | null;
  to: DiffPoint;
  size: number;
  /** `applying`: records are being written; `snapshotting`: all were written and flushed, the TO snapshot is being made. */
  phase: 'applying' | 'snapshotting';
  /** The import created the volume (a full stream): it is marked incomplete until the end. */
  createdVolume: boolean;
  startedAt: string;
  /** Every record below this volume offset was written and flushed (a checkpoint of a long import). */
  appliedThrough?: number;
}

export interface SnapshotOrigin {
  volume: string;
  /** The local snapshot's name and UUID. */
  snapshot: string;
  uuid: string;
  /** The UUID of the snapshot it was imported from (the stream's TO). */
  source: string;
}

interface Note {
  pending: Record<string, PendingImport>;
  snapshots: SnapshotOrigin[];
}

export class DiffImports {
  readonly file: string;

  constructor(home: string, pool: string) {
    this.file = path.join(path.resolve(home), 'diff-imports', `${pool}.json`);
  }

  pending(volume: string): PendingImport | undefined {
    return this.read().pending[volume];
  }

  setPending(volume: string, p: PendingImport): void {
    this.change((n) => {
      n.pending[volume] = p;
    });
  }

  dropPending(volume: string): void {
    this.change((n) => {
      delete n.pending[volume];
    });
  }

  /**
   * Every snapshot UUID known to hold the same bytes as `uuid`: an imported
   * snapshot is an exact copy of its source, so the records of every pool in
   * this home link UUIDs into classes (a backup's snapshot and its original;
   * a restore of it back again). Followed transitively.
   */
  sameAs(uuid: string): Set<string> {
    const edges = new Map<string, string[]>();
    const link = (a: string, b: string): void => {
      edges.set(a, [...(edges.get(a) ?? []), b]);
      edges.set(b, [...(edges.get(b) ?? []), a]);
    };
    for (const note of this.allNotes()) for (const s of note.snapshots) link(s.uuid, s.source);
    const seen = new Set([uuid]);
    const todo = [uuid];
    while (todo.length > 0) {
      for (const next of edges.get(todo.pop()!) ?? []) {
        if (seen.has(next)) continue;
        seen.add(next);
        todo.push(next);
      }
    }
    return seen;
  }

  /** The import of `volume` ended with `origin` made: one write records it and forgets the pending import. */
  finish(volume: string, origin: SnapshotOrigin): void {
    this.change((n) => {
      delete n.pending[volume];
      n.snapshots = n.snapshots.filter((s) => s.uuid !== origin.uuid);
      n.snapshots.push(origin);
    });
  }

  /** This pool's note and those of the home's other pools (one that cannot be read adds nothing). */
  private allNotes(): Note[] {
    const dir = path.dirname(this.file);
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((n) => n.endsWith('.json'));
    } catch {
      names = [];
    }
    const others = names.filter((n) => path.join(dir, n) !== this.file).map((n) => {
      try {
        return readNote(path.join(dir, n));
      } catch {
        return { pending: {}, snapshots: [] };
      }
    });
    return [this.read(), ...others];
  }

  private read(): Note {
    return readNote(this.file);
  }

  private change(fn: (n: Note) => void): void {
    const note = this.read();
    fn(note);
    writeJsonDurably(this.file, note);
  }
}

function readNote(file: string): Note {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pending: {}, snapshots: [] };
    throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    const raw = JSON.parse(text) as Partial<Note>;
    return { pending: raw.pending ?? {}, snapshots: Array.isArray(raw.snapshots) ? raw.snapshots : [] };
  } catch {
    throw new Error(`${file} is damaged (not JSON): move it away to start import-diff over (incremental streams then need their base found by its own UUID)`);
  }
}
