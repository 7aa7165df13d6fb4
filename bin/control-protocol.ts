import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { ADMIN_OPS, parseAdminRequest, type AdminRequest } from '../src/host/admin.js';
import { JOB_OPS, parseJobRequest, type JobRequest } from '../src/host/job-requests.js';
import type { ArrayStatus, ScrubReport } from '../src/raid/index.js';
import { checkName } from './registry.js';

/**
 * The control channel of a served pool: `strata serve` listens on
 * HOME/run/POOL.sock (mode 0600) and the pool, volume, map and raid commands
 * send it one JSON request per line. A request gets zero or more progress lines, then exactly
 * one reply line with `ok`. Member files are absolute paths: the server's
 * working directory is not the client's.
 */
export type RaidRequest =
  | { op: 'status' }
  | { op: 'fail'; member: string; rate?: number }
  | { op: 'remove'; member: string }
  | { op: 'add'; file: string; rate?: number }
  | { op: 'replace'; member: string; file: string; rate?: number }
  /** Starts (or resumes, or joins) the rebuild of every role waiting for one; replies once the array is whole, sending progress meanwhile. */
  | { op: 'rebuild'; rate?: number }
  | { op: 'scrub'; repair?: boolean };

export type ControlRequest = RaidRequest | AdminRequest | JobRequest;

export interface ControlProgress {
  progress: number;
  bytes: number;
}

export type ControlReply =
  | { ok: true; status?: ArrayStatus; messages: string[]; role?: number | 'spare'; report?: ScrubReport; rebuilding?: boolean; result?: unknown }
  | { ok: false; error: string };

export type ControlLine = ControlProgress | ControlReply;

/** Longest request line accepted; a request is a few hundred bytes. */
export const MAX_LINE = 64 * 1024;

export function controlSocketPath(home: string, pool: string): string {
  return path.join(path.resolve(home), 'run', `${checkName('pool', pool)}.sock`);
}

/** Checks a request line field by field; the error names what is wrong. */
export function parseRequest(line: string): ControlRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new Error('request is not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('request is not a JSON object');
  const r = raw as Record<string, unknown>;
  const str = (key: string): string => {
    const v = r[key];
    if (typeof v !== 'string' || v === '') throw new Error(`'${String(r.op)}' needs '${key}' (a string)`);
    return v;
  };
  const file = (key: string): string => {
    const v = str(key);
    if (!path.isAbsolute(v)) throw new Error(`'${key}' must be an absolute path, got '${v}'`);
    return path.normalize(v);
  };
  const member = (): string => {
    const v = str('member');
    return /^\d+$/.test(v) ? v : file('member');
  };
  const rate = (): { rate?: number } => {
    if (r.rate === undefined) return {};
    if (typeof r.rate !== 'number' || !Number.isSafeInteger(r.rate) || r.rate < 0) throw new Error(`'rate' must be a whole number of bytes per second, got ${JSON.stringify(r.rate)}`);
    return { rate: r.rate };
  };
  const flag = (key: string): boolean => {
    if (r[key] === undefined) return false;
    if (typeof r[key] !== 'boolean') throw new Error(`'${key}' must be true or false`);
    return r[key];
  };
  if (typeof r.op === 'string' && ADMIN_OPS.has(r.op)) return parseAdminRequest(r);
  if (typeof r.op === 'string' && JOB_OPS.has(r.op)) return parseJobRequest(r);
  switch (r.op) {
    case 'status':
      return { op: 'status' };
    case 'fail':
      return { op: 'fail', member: member(), ...rate() };
    case 'remove':
      return { op: 'remove', member: member() };
    case 'add':
      return { op: 'add', file: file('file'), ...rate() };
    case 'replace':
      return { op: 'replace', member: member(), file: file('file'), ...rate() };
    case 'rebuild':
      return { op: 'rebuild', ...rate() };
    case 'scrub':
      return { op: 'scrub', repair: flag('repair') };
    default:
      throw new Error(`unknown request '${String(r.op)}' (status, fail, remove, add, replace, rebuild, scrub, ${[...ADMIN_OPS, ...JOB_OPS].join(', ')})`);
  }
}

/** Splits a UTF-8 byte stream into lines (a character may straddle chunks), refusing one longer than `max` characters. */
export class LineSplitter {
  private pending = '';
  private readonly decoder = new StringDecoder('utf8');

  constructor(private readonly max: number) {}

  push(chunk: Buffer): string[] {
    this.pending += this.decoder.write(chunk);
    const lines = this.pending.split('\n');
    this.pending = lines.pop()!;
    if (this.pending.length > this.max || lines.some((l) => l.length > this.max)) throw new Error(`line longer than ${this.max} bytes`);
    return lines;
  }
}
