import fs from 'node:fs';
import path from 'node:path';
import { parsePendingRepairs, type PendingRepair, type RaidArray } from '../raid/index.js';
import { removeDurably, writeJsonDurably } from './durable-json.js';

/**
 * Pending repairs outlive the read-only open that found them: they are kept
 * in the home (HOME/pending-repairs/ARRAY-UUID.json), never on the members a
 * read-only open may not write, so that `raid status` reports them and the
 * next read-write open of the array carries them out.
 */
function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ');
}

function fileOf(home: string, array: RaidArray | string): string {
  const uuid = typeof array === 'string' ? array : array.geometry.uuid;
  return path.join(path.resolve(home), 'pending-repairs', `${uuid}.json`);
}

/** The array is gone (its pool deleted): so are its pending repairs. */
export function forgetPending(home: string, arrayUuid: string): void {
  fs.rmSync(fileOf(home, arrayUuid), { force: true });
}

/** Hands the repairs stored for this array to it. A damaged file is reported and ignored: the pool's checksums find the damage again. */
export function loadPending(home: string, array: RaidArray, warn: (message: string) => void): void {
  const file = fileOf(home, array);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    return warn(`cannot read the pending repairs in ${file}: ${message(err)}`);
  }
  try {
    array.addPendingRepairs(parsePendingRepairs(JSON.parse(text) as unknown, array.size, array.geometry.members));
  } catch (err) {
    warn(`ignoring ${file}: ${message(err)}`);
  }
}

/** Records what the array still has pending (none: the file goes), atomically. */
export function savePending(home: string, array: RaidArray, list: PendingRepair[] = array.pendingRepairs()): void {
  const file = fileOf(home, array);
  if (list.length === 0) {
    removeDurably(file);
    return;
  }
  writeJsonDurably(file, list);
}

/** A read-write open: carry out what an earlier read-only open left pending, before anything else uses the array. */
export async function repairPendingNow(home: string, array: RaidArray, say: (message: string) => void): Promise<void> {
  const before = array.pendingRepairs().length;
  if (before === 0 || array.readOnly) return;
  let done: { repaired: number; dropped: number };
  try {
    done = await array.repairPending();
  } catch (err) {
    // Left pending (and stored): the array still serves the good copy through the pool's checksums.
    say(`pending repairs not carried out: ${message(err)}`);
    return;
  } finally {
    savePending(home, array);
  }
  const { repaired, dropped } = done;
  if (repaired + dropped > 0) say(`${repaired} pending repair(s) carried out${dropped ? `, ${dropped} no longer confirmed (a repairing pool check finds them by checksum)` : ''}`);
}
