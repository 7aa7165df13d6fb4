/**
 * What is wrong with an image, said with the place: the file and the byte
 * offset in it where the reader found it, so a damaged image is reported and
 * never half understood.
 */
export class ImageFormatError extends Error {
  constructor(
    readonly file: string,
    readonly offset: number | null,
    what: string,
  ) {
    super(offset === null ? `${file}: ${what}` : `${file}: ${what} (at offset ${offset})`);
    this.name = 'ImageFormatError';
  }
}

/** A feature of a format that Strata does not read or write, named as the format's documentation names it. */
export class UnsupportedImageError extends Error {
  constructor(
    readonly file: string,
    what: string,
  ) {
    super(`${file}: ${what} is not supported`);
    this.name = 'UnsupportedImageError';
  }
}

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
