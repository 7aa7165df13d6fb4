/**
 * The one rule for pool and volume names. Names become file names (a pool's
 * registration), export names and parts of `pool/volume@snapshot`, so they
 * hold no '/', '@' or anything a shell or a URI would need to quote.
 */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const NAME_RULE = "1–64 letters, digits, '.', '_' or '-', starting with a letter or digit";

export function isValidName(name: string): boolean {
  return NAME.test(name);
}
