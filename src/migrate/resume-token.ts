import { AdminError } from '../host/admin.js';

/**
 * What a sender needs to continue an interrupted receive (ZFS's
 * receive_resume_token): the stream's identity and the names it was asked
 * for, the section the receiver was in and the volume offset below which
 * that section is durable there. Printed as one line: `strata1-` and the
 * JSON in base64url.
 */
export interface ResumeToken {
  stream: string;
  /** The sending volume and the request's snapshot names, so `send --resume` rebuilds the same stream. */
  volume: string;
  from: string | null;
  to: string;
  section: number;
  through: number;
}

const PREFIX = 'strata1-';

export function encodeToken(t: ResumeToken): string {
  const { stream, volume, from, to, section, through } = t;
  return PREFIX + Buffer.from(JSON.stringify({ stream, volume, from, to, section, through }), 'utf8').toString('base64url');
}

export function decodeToken(text: string): ResumeToken {
  const bad = (why: string): AdminError => new AdminError('EINVAL', `bad resume token: ${why} (receive --token prints the receiver's token again)`);
  if (!text.startsWith(PREFIX)) throw bad(`it does not start with '${PREFIX}'`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(text.slice(PREFIX.length), 'base64url').toString('utf8'));
  } catch {
    throw bad('it is damaged (not base64 of JSON)');
  }
  const r = raw as Record<string, unknown>;
  const name = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && v.length <= 255;
  if (typeof r !== 'object' || r === null || typeof r.stream !== 'string' || !/^[0-9a-f]{32}$/.test(r.stream) || !name(r.volume) || !name(r.to) || (r.from !== null && !name(r.from)) || !Number.isSafeInteger(r.section) || (r.section as number) < 0 || !Number.isSafeInteger(r.through) || (r.through as number) < 0) throw bad('its fields are damaged');
  return { stream: r.stream, volume: r.volume as string, from: r.from as string | null, to: r.to as string, section: r.section as number, through: r.through as number };
}
