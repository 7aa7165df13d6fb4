import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { ADMIN_OPS, parseAdminRequest, type AdminRequest } from './admin.js';
import { ENDPOINT_OP, parseEndpointRequest, type EndpointRequest } from './served-endpoint.js';
import { JOB_OPS, parseJobRequest, type JobRequest } from './job-requests.js';
import { parseRaidRequest, RAID_OPS, type RaidRequest, type RaidResult } from './raid-admin.js';
import { checkName } from './registry.js';
import { ONLINE_MIGRATION_OP, parseOnlineMigration } from './online-migration-request.js';
import type { OnlineMigrationRequest } from './online-migration.js';
import { DIFF_TRANSFER_OPS, parseDiffTransferRequest, type DiffTransferRequest } from './diff-transfer.js';
import { parseSendTransferRequest, SEND_TRANSFER_OPS, type SendTransferRequest } from '../migrate/send-transfer.js';
import { NBD_PUSH_OP, parseNbdPushRequest, type NbdPushRequest } from '../migrate/nbd-push-request.js';

/**
 * The control channel of a served pool: `strata serve` listens on
 * HOME/run/POOL.sock (mode 0600) and the pool, volume, map and raid commands
 * send it one JSON request per line. A request gets zero or more progress lines, then exactly
 * one reply line with `ok`. Member files are absolute paths: the server's
 * working directory is not the client's.
 */
export type ControlRequest = RaidRequest | AdminRequest | EndpointRequest | JobRequest | DiffTransferRequest | SendTransferRequest | OnlineMigrationRequest | NbdPushRequest;

export interface ControlProgress {
  progress: number;
  bytes: number;
}

export type ControlReply =
  | ({ ok: true; messages: string[]; result?: unknown } & Partial<Omit<RaidResult, 'messages'>>)
  | { ok: false; error: string };

export type ControlLine = ControlProgress | ControlReply;

/** Longest request line accepted; a request is a few hundred bytes, one that carries template settings up to 64 KiB more. */
export const MAX_LINE = 256 * 1024;

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
  if (typeof r.op === 'string' && ADMIN_OPS.has(r.op)) return parseAdminRequest(r);
  if (r.op === ENDPOINT_OP) return parseEndpointRequest(r);
  if (r.op === ONLINE_MIGRATION_OP) return parseOnlineMigration(r);
  if (typeof r.op === 'string' && JOB_OPS.has(r.op)) return parseJobRequest(r);
  if (typeof r.op === 'string' && RAID_OPS.has(r.op)) return parseRaidRequest(r);
  if (typeof r.op === 'string' && DIFF_TRANSFER_OPS.has(r.op)) return parseDiffTransferRequest(r);
  if (typeof r.op === 'string' && SEND_TRANSFER_OPS.has(r.op)) return parseSendTransferRequest(r);
  if (r.op === NBD_PUSH_OP) return parseNbdPushRequest(r);
  throw new Error(`unknown request '${String(r.op)}' (${[...RAID_OPS, ...ADMIN_OPS, ...DIFF_TRANSFER_OPS, ...SEND_TRANSFER_OPS, ONLINE_MIGRATION_OP, NBD_PUSH_OP, ...JOB_OPS].join(', ')})`);
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
