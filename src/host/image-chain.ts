import fs from 'node:fs';
import path from 'node:path';
import { fileSource, type ByteSource } from '../image/byte-source.js';
import type { DiskFormat, ImageReader } from '../image/image-reader.js';
import { openImage } from '../image/formats.js';
import { isValidName } from '../qcowlike/names.js';

/** One image of a backing chain, opened: its reader, and the source it reads (counted, for progress). */
export interface ChainLayer {
  /** The path the image was found at (the backing name resolved against its overlay's directory). */
  file: string;
  reader: ImageReader;
  source: CountedSource;
}

/** A ByteSource that remembers how far into it reads went: the progress of a decode in bytes of the file. */
export interface CountedSource extends ByteSource {
  readonly reached: number;
}

export function counted(source: ByteSource, onRead: () => void = () => undefined): CountedSource {
  let reached = 0;
  return {
    name: source.name,
    size: source.size,
    seekable: source.seekable,
    get reached() {
      return reached;
    },
    read: async (offset, length) => {
      const buf = await source.read(offset, length);
      reached = Math.max(reached, offset + buf.length);
      onRead();
      return buf;
    },
    close: () => source.close(),
  };
}

/** Images deeper than this are taken for a loop the names hide (a symlink pointing back). */
const MAX_DEPTH = 64;

/**
 * Opens the image `top` reads from and every image below it, base first. A
 * backing name is resolved against the directory of the image that names it
 * (as qemu does for a relative name); a stream cannot have one, since the
 * file it names would be found relative to nothing.
 */
export async function openChain(top: ByteSource, file: string, format: DiskFormat | undefined, onRead?: () => void): Promise<ChainLayer[]> {
  const layers: ChainLayer[] = [];
  const seen = new Set<string>();
  try {
    let source = counted(top, onRead);
    let at = file;
    let want = format;
    for (;;) {
      const reader = await openImage(source, want);
      layers.unshift({ file: at, reader, source });
      const backing = reader.backing;
      if (backing === null) return layers;
      if (!source.seekable) throw new Error(`${source.name} has a backing file (${backing.file}), which an image read from a stream cannot have: import it from its file`);
      seen.add(realPath(at));
      if (layers.length > MAX_DEPTH) throw new Error(`${file} has more than ${MAX_DEPTH} backing files`);
      const next = path.resolve(path.dirname(at), backing.file);
      if (seen.has(realPath(next))) throw new Error(`${at}: its backing file ${backing.file} is already in the chain (a loop)`);
      if (!fs.existsSync(next)) throw new Error(`${at}: its backing file ${backing.file} is missing (looked for ${next})`);
      source = counted(fileSource(next), onRead);
      at = next;
      want = backing.format ?? undefined;
    }
  } catch (err) {
    await closeChain(layers);
    throw err;
  }
}

export async function closeChain(layers: ChainLayer[]): Promise<void> {
  for (const l of layers) await l.source.close().catch(() => undefined);
}

function realPath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * The snapshot names of a chain's layers below the top: each image's file
 * name without its extension, made a valid name (other characters become
 * '-'), and made unique with a -2, -3… suffix.
 */
export function snapshotNames(files: string[]): string[] {
  const taken = new Set<string>();
  return files.map((f) => {
    const stem = path.basename(f).replace(/\.(qcow2|qcow|img|vmdk|vhdx?|raw)$/i, '');
    let base = stem.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 56);
    if (!isValidName(base)) base = 'layer';
    let name = base;
    for (let n = 2; taken.has(name); n++) name = `${base}-${n}`;
    taken.add(name);
    return name;
  });
}
