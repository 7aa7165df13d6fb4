/**
 * A volume an import created and never finished (killed, interrupted past
 * cleanup, a crash) holds part of an image. Handing it to a guest or into an
 * export as if it were the image is the harm, so commands that would do that
 * refuse it unless told otherwise, and say how to get out.
 */
export class IncompleteVolumeError extends Error {
  constructor(pool: string, volume: string, override: string) {
    super(`volume '${pool}/${volume}' is incomplete: ${INCOMPLETE_ADVICE}; ${override}`);
  }
}

/** What a user can do about an incomplete volume; `volume info` prints it too. */
export const INCOMPLETE_ADVICE = 'its import did not finish (run the import again to complete it, or delete the volume)';
