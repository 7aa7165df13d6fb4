import fs from 'node:fs';
import path from 'node:path';

/**
 * The home directory (--home, STRATA_HOME, ./strata-data) is the user's to
 * name, so what is wrong with it is a user error: one line saying what, not
 * the ENOTDIR of whichever scandir or mkdir met it first.
 */

/** A home that does not exist is fine (commands that write create it); one that cannot be a directory, or cannot be read, is not. */
export function checkHome(home: string): void {
  const dir = path.resolve(home);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    throw homeError(home, err);
  }
  if (!st.isDirectory()) throw new Error(`home '${home}' is not a directory`);
  try {
    fs.accessSync(dir, fs.constants.R_OK | fs.constants.X_OK);
  } catch (err) {
    throw new Error(`home '${home}' is not readable: ${reason(err)}`);
  }
}

/**
 * Creates the home and its registry directory where they are missing, and
 * returns the directories it made (deepest last), so that a command that
 * then fails can take them away again with removeMadeDirs.
 */
export function makeHome(home: string): string[] {
  checkHome(home);
  const dir = path.resolve(home);
  const made: string[] = [];
  const step = (what: () => void, message: (why: string) => string): void => {
    try {
      what();
    } catch (err) {
      removeMadeDirs(made);
      throw new Error(message(reason(err)));
    }
  };
  const mkdir = (d: string): void => {
    const first = fs.mkdirSync(d, { recursive: true });
    if (first !== undefined) made.push(...chain(first, d));
  };
  step(() => mkdir(dir), (why) => `cannot create home '${home}': ${why}`);
  // The registry directory and the pool files go inside: a home that exists but refuses them is not writable.
  step(() => fs.accessSync(dir, fs.constants.W_OK), (why) => `home '${home}' is not writable: ${why}`);
  const pools = path.join(dir, 'pools');
  step(() => mkdir(pools), (why) => `cannot create ${pools}: ${why}`);
  step(() => fs.accessSync(pools, fs.constants.W_OK), (why) => `${pools} is not writable: ${why}`);
  return made;
}

/** Removes directories makeHome made, deepest first, and only while they are empty: never anything someone put there. */
export function removeMadeDirs(made: string[]): void {
  for (const d of [...made].reverse()) {
    try {
      fs.rmdirSync(d);
    } catch {
      return;
    }
  }
}

/** `first` and each directory below it down to `last`: what mkdir -p made. */
function chain(first: string, last: string): string[] {
  const out: string[] = [];
  for (let d = last; ; d = path.dirname(d)) {
    out.unshift(d);
    if (d === first || path.dirname(d) === d) return out;
  }
}

function homeError(home: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOTDIR') return new Error(`home '${home}' is not a directory (${fileOnTheWay(path.resolve(home)) ?? 'a part of its path is a file'})`);
  if (code === 'EACCES' || code === 'EPERM') return new Error(`home '${home}' cannot be reached: ${reason(err)}`);
  return new Error(`home '${home}' cannot be used: ${reason(err)}`);
}

/** The first component of `dir` that exists and is not a directory, named for the message. */
function fileOnTheWay(dir: string): string | undefined {
  const parts = dir.split(path.sep).filter((p) => p !== '');
  let at = path.parse(dir).root;
  for (const p of parts) {
    at = path.join(at, p);
    try {
      const st = fs.statSync(at);
      if (!st.isDirectory()) return `${at} is ${st.isFile() ? 'a file' : 'not a directory'}`;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'EACCES' || e.code === 'EPERM') return 'permission denied';
  if (e.code === 'EROFS') return 'read-only file system';
  if (e.code === 'ENOSPC') return 'no space left on the device';
  if (e.code === 'ENOTDIR' || e.code === 'EEXIST') return 'a part of its path is not a directory';
  if (e.code === 'ELOOP') return 'too many symbolic links';
  return e.message;
}
