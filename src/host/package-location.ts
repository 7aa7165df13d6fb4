import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileSource, type ByteSource } from '../image/byte-source.js';
import { httpSource, httpStream, isHttpUrl, relativeUrl, type HttpOptions } from './http-source.js';
import { systemReason } from './image-source.js';
import { findDescriptor } from '../package/ovf-dir.js';

export type PackageKind = 'ova' | 'ovf' | 'xml';

/**
 * Where a template package is: a local path (a file, or a directory holding
 * one .ovf) or an http(s) URL, with its kind, and the files its descriptor
 * names opened relative to the descriptor, never outside its folder.
 */
export interface PackageLocation {
  kind: PackageKind;
  /** The .ova, .ovf or .xml itself: a path or URL, as messages name it. */
  main: string;
  /** True for an http(s) URL. */
  remote: boolean;
  /** The main file as a ByteSource (forward-only for a URL). */
  openMain(): Promise<ByteSource>;
  /** The main file as a stream, read once front to back (an OVA is never fetched whole first). */
  streamMain(): Promise<Readable>;
  /** A file the descriptor names, relative to its folder; refused when it leaves it; null when it does not exist (a local file only; a URL answers 404 on open). */
  openRelative(href: string): Promise<ByteSource | null>;
  /** Where `href` is, as messages name it. */
  where(href: string): string;
}

const KINDS: Record<string, PackageKind> = { '.ova': 'ova', '.ovf': 'ovf', '.xml': 'xml' };

export async function locatePackage(source: string, http: HttpOptions): Promise<PackageLocation> {
  return isHttpUrl(source) ? remoteLocation(source, http) : localLocation(source);
}

function remoteLocation(url: string, http: HttpOptions): PackageLocation {
  const pathname = new URL(url).pathname;
  const kind = KINDS[path.posix.extname(pathname).toLowerCase()];
  if (kind === undefined) throw new Error(`${url}: a package URL must end in .ova, .ovf or .xml (a directory cannot be listed over HTTP: give its .ovf)`);
  return {
    kind,
    main: url,
    remote: true,
    openMain: () => httpSource(url, http),
    streamMain: async () => (await httpStream(url, http)).stream,
    openRelative: (href) => httpSource(relativeUrl(url, href), http),
    where: (href) => relativeUrl(url, href),
  };
}

function localLocation(given: string): PackageLocation {
  let st: fs.Stats;
  try {
    st = fs.statSync(given);
  } catch (err) {
    throw new Error(`cannot read ${given}: ${systemReason(err)}`);
  }
  if (!st.isDirectory() && !st.isFile()) throw new Error(`${given} is not a regular file or a directory`);
  const main = findDescriptor(given);
  const kind = KINDS[path.extname(main).toLowerCase()] ?? sniffKind(main);
  const folder = path.dirname(path.resolve(main));
  const resolve = (href: string): string => {
    const target = path.resolve(folder, href);
    if (path.isAbsolute(href) || href.includes('\\') || !target.startsWith(folder + path.sep)) throw new Error(`${main}: the disk '${href}' is outside the package's folder ${folder}`);
    return target;
  };
  return {
    kind,
    main,
    remote: false,
    openMain: async () => fileSource(main),
    streamMain: async () => fs.createReadStream(main, { highWaterMark: 1 << 20 }),
    openRelative: async (href) => {
      const file = resolve(href);
      if (!fs.existsSync(file)) return null;
      // A symbolic link that leads out of the folder leaves the package as surely as '..'.
      const real = fs.realpathSync(file);
      if (!real.startsWith(fs.realpathSync(folder) + path.sep)) throw new Error(`${main}: the disk '${href}' is a link to ${real}, outside the package's folder`);
      return fileSource(file, path.join(path.dirname(main), href));
    },
    where: (href) => path.join(path.dirname(main), href),
  };
}

/** A file whose name says nothing: a tar (ustar magic at 257) is an OVA, XML an OVF or a libvirt domain by its root. */
function sniffKind(file: string): PackageKind {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(4096);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    const text = head.toString('latin1', 0, n);
    if (n >= 262 && text.slice(257, 262) === 'ustar') return 'ova';
    if (/<(\w+:)?Envelope[\s>]/.test(text)) return 'ovf';
    if (/<domain[\s>]/.test(text)) return 'xml';
  } finally {
    fs.closeSync(fd);
  }
  throw new Error(`${file}: not a template package (an OVA tar, an OVF descriptor or a libvirt domain XML)`);
}
