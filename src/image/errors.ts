/**
 * Something wrong with, or not supported in, a named file (an image, a
 * package, a member of one): the message starts with the file's name. The
 * base of the image and package errors, so a caller can report either alike.
 */
export abstract class FileError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    // Each subclass is named as it is declared (the code is not minified).
    this.name = new.target.name;
  }
}

/** A feature of a file's format that Strata does not read or write, named as the format names it. */
export abstract class UnsupportedFeatureError extends FileError {
  constructor(file: string, what: string) {
    super(file, `${what} is not supported`);
  }
}

/**
 * What is wrong with an image, said with the place: the file and the byte
 * offset in it where the reader found it, so a damaged image is reported and
 * never half understood.
 */
export class ImageFormatError extends FileError {
  constructor(
    file: string,
    readonly offset: number | null,
    what: string,
  ) {
    super(file, offset === null ? what : `${what} (at offset ${offset})`);
  }
}

/** A feature of a format that Strata does not read or write, named as the format's documentation names it. */
export class UnsupportedImageError extends UnsupportedFeatureError {}

/**
 * A forward-only source (a pipe, an HTTP body, a member of a streamed tar)
 * was asked for bytes it has passed already: the image keeps metadata after
 * the data it maps, so it cannot be read in one pass.
 */
export class NotStreamableError extends Error {
  constructor(
    readonly file: string,
    readonly wanted: number,
    readonly position: number,
  ) {
    super(`${file} cannot be read front to back: it needs offset ${wanted} after ${position} was passed (fetch it to a file first)`);
    this.name = 'NotStreamableError';
  }
}
