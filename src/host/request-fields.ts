/** A control request's true/false field: absent is false; anything but a boolean is refused, naming the field. */
export function requestFlag(raw: Record<string, unknown>, key: string): boolean {
  const v = raw[key];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new Error(`'${key}' must be true or false`);
  return v;
}
