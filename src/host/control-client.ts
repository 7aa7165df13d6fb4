import net from 'node:net';
import { controlSocketPath, LineSplitter, type ControlLine, type ControlProgress, type ControlReply, type ControlRequest } from './control-protocol.js';

export type ControlOk = Extract<ControlReply, { ok: true }>;

/** A connection to the control socket of a served pool. */
export class ControlClient {
  private constructor(
    private readonly conn: net.Socket,
    readonly pool: string,
  ) {}

  /** The served pool's control channel, or undefined when nobody serves it (no socket, or a stale one). */
  static async connect(home: string, pool: string): Promise<ControlClient | undefined> {
    const file = controlSocketPath(home, pool);
    return new Promise((resolve, reject) => {
      const conn = net.connect(file);
      conn.once('connect', () => {
        conn.removeAllListeners('error');
        conn.on('error', () => undefined);
        resolve(new ControlClient(conn, pool));
      });
      conn.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
        else reject(new Error(`cannot reach the server of pool '${pool}' at ${file}: ${err.message}`));
      });
    });
  }

  /** Sends one request; progress lines go to `onProgress`; an error reply becomes an Error with the server's message. */
  request(req: ControlRequest, onProgress?: (p: ControlProgress) => void): Promise<ControlOk> {
    return new Promise((resolve, reject) => {
      const lines = new LineSplitter(16 * 1024 * 1024);
      const cleanup = (): void => {
        this.conn.off('data', onData);
        this.conn.off('close', onClose);
      };
      const onClose = (): void => {
        cleanup();
        reject(new Error(`the server of pool '${this.pool}' closed the control connection before answering (did it stop?)`));
      };
      const onData = (chunk: Buffer): void => {
        let got: string[];
        try {
          got = lines.push(chunk);
        } catch (err) {
          cleanup();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        for (const text of got) {
          let line: ControlLine;
          try {
            line = JSON.parse(text) as ControlLine;
          } catch {
            cleanup();
            reject(new Error(`the server of pool '${this.pool}' answered something that is not JSON`));
            return;
          }
          if ('progress' in line) {
            onProgress?.(line);
            continue;
          }
          cleanup();
          if (line.ok) resolve(line);
          else reject(new Error(line.error));
          return;
        }
      };
      this.conn.on('data', onData);
      this.conn.on('close', onClose);
      this.conn.write(`${JSON.stringify(req)}\n`);
    });
  }

  close(): void {
    this.conn.end();
  }
}
