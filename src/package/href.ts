import path from 'node:path';
import { PackageError } from './errors.js';

/**
 * Refuses an href that would reach outside the package: a URL, an absolute
 * path, a drive letter, `..`, a backslash (a separator on Windows hosts
 * that made the package), or a NUL. What stays is a relative path inside
 * the package, as OVF requires for files it carries.
 */
export function checkHref(href: string, file: string): void {
  const refuse = (why: string): never => {
    throw new PackageError(file, `the href '${href}' ${why}`);
  };
  if (href === '') refuse('is empty');
  if (/^[a-z][a-z0-9+.-]*:/i.test(href)) refuse('is a URL or drive path; only files inside the package are read');
  if (href.startsWith('/')) refuse('is an absolute path; only files inside the package are read');
  if (href.includes('\\')) refuse('holds a backslash');
  if (href.includes('\0')) refuse('holds a NUL');
  if (href.split('/').some((part) => part === '..')) refuse("leaves the package ('..')");
  if (path.posix.normalize(href) === '.' || href.endsWith('/')) refuse('names a directory');
}

/** The name of chunk `i` of a chunked file: href.000000000, href.000000001, … (OVF's nine digits). */
export function chunkName(href: string, i: number): string {
  return `${href}.${String(i).padStart(9, '0')}`;
}
