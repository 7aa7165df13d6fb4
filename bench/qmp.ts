import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A minimal QEMU Machine Protocol client over a unix socket: the greeting,
 * capability negotiation, commands matched to their replies by id, and
 * events kept for whoever waits for them.
 */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  command: string;
}

export class Qmp {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  readonly events: QmpEvent[] = [];
  private greeted: (() => void) | undefined;
  private closedWith: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('QMP connection closed')));
  }

  /** Connects once QEMU has made the socket (it may still be starting) and leaves capability negotiation behind. */
  static async connect(path: string, timeoutMs = 15_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new Qmp(socket);
        await qmp.greeting();
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`no QMP on ${path} within ${timeoutMs} ms: ${(err as Error).message}`);
        await sleep(100);
      }
    }
  }

  /** Runs one command; rejects with QEMU's error description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: (v) => resolve(v as T), reject, command });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  /** Polls `query-migrate` until the migration ends; its final status record. */
  async migrationEnd(timeoutMs: number): Promise<MigrationInfo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.execute<MigrationInfo>('query-migrate');
      if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') return info;
      if (Date.now() > deadline) throw new Error(`migration still ${info.status} after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /** Polls `query-block-jobs` until `done` holds for the list; throws when a job reports an error. */
  async waitForJob(done: (jobs: BlockJobInfo[]) => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const jobs = await this.execute<BlockJobInfo[]>('query-block-jobs');
      const failed = jobs.find((j) => j.error !== undefined);
      if (failed) throw new Error(`block job ${failed.device}: ${failed.error}`);
      if (done(jobs)) return;
      if (Date.now() > deadline) throw new Error(`block jobs not done after ${timeoutMs} ms: ${JSON.stringify(jobs)}`);
      await sleep(50);
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private greeting(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closedWith) reject(this.closedWith);
      this.greeted = resolve;
      this.pending.set('greeting', { resolve: () => undefined, reject, command: 'greeting' });
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line !== '') this.onMessage(JSON.parse(line) as QmpMessage);
    }
  }

  private onMessage(m: QmpMessage): void {
    if (m.QMP !== undefined) {
      this.pending.delete('greeting');
      this.greeted?.();
      return;
    }
    if (m.event !== undefined) {
      this.events.push({ event: m.event, data: m.data });
      return;
    }
    const p = m.id !== undefined ? this.pending.get(m.id) : undefined;
    if (!p || m.id === undefined) return;
    this.pending.delete(m.id);
    if (m.error) p.reject(new Error(`QMP ${p.command}: ${m.error.class}: ${m.error.desc}`));
    else p.resolve(m.return);
  }

  private fail(err: Error): void {
    this.closedWith ??= err;
    for (const p of this.pending.values()) p.reject(new Error(`QMP ${p.command}: ${err.message}`));
    this.pending.clear();
  }
}

export interface MigrationInfo {
  status: string;
  'error-desc'?: string;
  'total-time'?: number;
  downtime?: number;
  ram?: { transferred: number; 'dirty-sync-count': number };
}

export interface BlockJobInfo {
  /** The job id (QEMU calls it device for block jobs). */
  device: string;
  ready: boolean;
  status: string;
  offset: number;
  len: number;
  error?: string;
}

interface QmpMessage {
  QMP?: unknown;
  event?: string;
  data?: Record<string, unknown>;
  id?: string;
  return?: unknown;
  error?: { class: string; desc: string };
}
