import { FileError, UnsupportedFeatureError } from '../image/errors.js';

/**
 * What is wrong with a template package, said with the file it is in: a
 * damaged manifest, a missing disk, an href leaving the package, a truncated
 * tar. A package is refused whole, never half understood.
 */
export class PackageError extends FileError {}

/** A feature a package uses that Strata does not read or write, named as the package's format names it. */
export class UnsupportedPackageError extends UnsupportedFeatureError {}

/** A template-settings value that does not fit the model, naming the field (`disks[1].capacity`). */
export class SettingsError extends Error {
  constructor(
    readonly field: string,
    what: string,
  ) {
    super(`template settings: ${field} ${what}`);
    this.name = 'SettingsError';
  }
}
