import fs from 'node:fs';
import path from 'node:path';
import type { DiffPoint } from '../snapshot/diff-stream.js';
import { writeJsonDurably } from '../host/durable-json.js';
import { encodeToken } from './resume-token.js';

/**
 * What a receive in progress (or cut short) holds, per volume, in
 * HOME/receives/POOL.json (rewritten whole: temp file, fsync, rename). It is
 * written before the first byte is applied and dropped once the stream's
 * last snapshot is made; while it is there the volume is incomplete, and the
 * note is what the resume token is made from.
 */
export interface PendingReceive {
  stream: string;
  /** The sending volume and the request's names: what `send --resume` is run with. */
  source: { volume: string; from: string | null; to: string };
  /** The section being applied, and the volume offset below which it is written and flushed. */
  section: number;
  through: number;
  /** End points of every section, to tell a stream that ends elsewhere. */
  sections: DiffPoint[];
  /** The receive created the volume (it is deleted, not kept, if abandoned). */
  createdVolume: boolean;
  /** The template made here for a clone's origin (a base section), once it is made. */
  baseTemplate?: string;
  /** That template was made by this receive (not found in the pool), so abandoning the receive removes it. */
  baseCreated?: boolean;
  startedAt: string;
}

type Note = Record<string, PendingReceive>;

export class ReceiveNote {
  readonly file: string;

  constructor(home: string, pool: string) {
    this.file = path.join(path.resolve(home), 'receives', `${pool}.json`);
  }

  get(volume: string): PendingReceive | undefined {
    return this.read()[volume];
  }

  set(volume: string, p: PendingReceive): void {
    const n = this.read();
    n[volume] = p;
    this.write(n);
  }

  drop(volume: string): void {
    const n = this.read();
    if (!(volume in n)) return;
    delete n[volume];
    this.write(n);
  }

  /** The one-line token that continues the receive into `volume`, or null when none is pending. */
  token(volume: string): string | null {
    const p = this.get(volume);
    return p ? tokenOf(p) : null;
  }

  private read(): Note {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new Error(`cannot read ${this.file}: ${(err as Error).message}`);
    }
    try {
      return JSON.parse(text) as Note;
    } catch {
      throw new Error(`${this.file} is damaged (not JSON): move it away (an interrupted receive then starts over)`);
    }
  }

  private write(n: Note): void {
    writeJsonDurably(this.file, n);
  }
}

export function tokenOf(p: PendingReceive): string {
  return encodeToken({ stream: p.stream, volume: p.source.volume, from: p.source.from, to: p.source.to, section: p.section, through: p.through });
}
