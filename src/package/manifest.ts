import crypto from 'node:crypto';
import { PackageError } from './errors.js';
import { checkHref } from './href.js';

export type DigestAlgorithm = 'sha1' | 'sha256' | 'sha512';

const HEX_CHARS: Record<DigestAlgorithm, number> = { sha1: 40, sha256: 64, sha512: 128 };
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = ['sha1', 'sha256', 'sha512'];

export interface ManifestEntry {
  file: string;
  algorithm: DigestAlgorithm;
  /** Lower-case hex. */
  digest: string;
}

/** Bytes a manifest may take; one line per file keeps real ones far below. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

/**
 * Parses an OVF manifest: one `SHA256(file)= hex` line per file (SHA1 from
 * OVF 1.x tools, SHA512 allowed too), as `sha256sum --tag` writes them.
 */
export function parseManifest(text: string, name: string): Map<string, ManifestEntry> {
  const entries = new Map<string, ManifestEntry>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const m = /^\s*(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$/.exec(line);
    if (!m) throw new PackageError(name, `line ${i + 1} is not 'SHA256(file)= digest': '${line.slice(0, 80)}'`);
    const algorithm = m[1]!.toLowerCase() as DigestAlgorithm;
    const file = m[2]!;
    const digest = m[3]!.toLowerCase();
    if (digest.length !== HEX_CHARS[algorithm]) throw new PackageError(name, `line ${i + 1}: a ${m[1]} digest has ${HEX_CHARS[algorithm]} hex digits, not ${digest.length}`);
    checkHref(file, name);
    if (entries.has(file)) throw new PackageError(name, `lists ${file} twice`);
    entries.set(file, { file, algorithm, digest });
  });
  return entries;
}

/** A manifest's text: SHA256 lines in the order given. */
export function manifestText(entries: readonly { file: string; sha256: string }[]): string {
  return entries.map((e) => `SHA256(${e.file})= ${e.sha256}\n`).join('');
}

/** Digests of one stream under several algorithms at once: before a manifest is read, which one it uses is not known. */
export class Digests {
  private readonly hashes: Map<DigestAlgorithm, crypto.Hash>;
  private done: Map<DigestAlgorithm, string> | null = null;
  bytes = 0;

  constructor(algorithms: readonly DigestAlgorithm[]) {
    this.hashes = new Map(algorithms.map((a) => [a, crypto.createHash(a)]));
  }

  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    for (const h of this.hashes.values()) h.update(chunk);
  }

  digest(algorithm: DigestAlgorithm): string | undefined {
    this.done ??= new Map([...this.hashes].map(([a, h]) => [a, h.digest('hex')]));
    return this.done.get(algorithm);
  }
}

/**
 * The failure of `file` against its manifest entry, or null when it
 * matches. `digests` must hold the entry's algorithm.
 */
export function mismatch(entry: ManifestEntry, digests: Digests, manifestName: string): PackageError | null {
  const got = digests.digest(entry.algorithm);
  if (got === entry.digest) return null;
  return new PackageError(entry.file, `its ${entry.algorithm.toUpperCase()} digest is ${got ?? '(not computed)'}, but ${manifestName} says ${entry.digest}: the file is damaged or was changed`);
}
