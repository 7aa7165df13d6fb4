import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hostMetrics } from '../../src/host/metrics.js';
import { COMMAND_KINDS, NbdClient, SparseMemoryDevice, type CommandKind } from '../../src/nbd/index.js';
import { serveDevices } from './support.js';

const SIZE = 1024 * 1024;

type Op = { kind: 'read' | 'write' | 'trim' | 'zero'; offset: number; length: number } | { kind: 'flush' };

const range = fc.record({ offset: fc.integer({ min: 0, max: SIZE + 8192 }), length: fc.integer({ min: 1, max: 65536 }) });
const op: fc.Arbitrary<Op> = fc.oneof(
  range.map((r) => ({ kind: 'read' as const, ...r })),
  range.map((r) => ({ kind: 'write' as const, ...r })),
  range.map((r) => ({ kind: 'trim' as const, ...r })),
  range.map((r) => ({ kind: 'zero' as const, ...r })),
  fc.constant({ kind: 'flush' as const }),
);

/** What the counters should say: every request answered, bytes only for those in range, errors for the rest. */
class Model {
  readonly counts = new Map<CommandKind, { ops: number; bytes: number; errors: number }>(COMMAND_KINDS.map((k) => [k, { ops: 0, bytes: 0, errors: 0 }]));
  apply(o: Op): boolean {
    const c = this.counts.get(o.kind)!;
    c.ops++;
    const ok = o.kind === 'flush' || o.offset + o.length <= SIZE;
    if (!ok) c.errors++;
    else if (o.kind !== 'flush') c.bytes += o.length;
    return ok;
  }
}

async function send(client: NbdClient, o: Op): Promise<boolean> {
  try {
    if (o.kind === 'flush') await client.flush();
    else if (o.kind === 'read') await client.read(o.offset, o.length);
    else if (o.kind === 'write') await client.write(Buffer.alloc(o.length, 7), o.offset);
    else if (o.kind === 'trim') await client.trim(o.offset, o.length);
    else await client.writeZeroes(o.offset, o.length);
    return true;
  } catch {
    return false;
  }
}

describe('per-export request counters', () => {
  it('match a plain model of the requests sent, over several connections, and reach the exposition unchanged', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { maxLength: 25 }), { minLength: 1, maxLength: 3 }), async (perConnection) => {
        const srv = await serveDevices([{ name: 'd', device: new SparseMemoryDevice(SIZE) }]);
        try {
          const model = new Model();
          // Connections one after another: the counters outlive each connection (and the export's reopening).
          for (const ops of perConnection) {
            const client = await NbdClient.connect({ port: srv.port, export: 'd' });
            for (const o of ops) expect(await send(client, o)).toBe(model.apply(o));
            await client.disconnect();
          }
          const stats = srv.server.exportStats.get('d')!;
          for (const [kind, want] of model.counts) {
            const got = stats.commands[kind];
            expect({ ops: got.ops, bytes: got.bytes, errors: got.errors }, kind).toEqual(want);
            // Refusals are counted, not timed; everything that ran is in exactly one bucket.
            expect(got.buckets.reduce((a, b) => a + b, 0)).toBe(got.timed);
            expect(got.timed).toBe(want.ops - want.errors);
          }
          const text = await hostMetrics({ server: srv.server, pools: [] }).metrics();
          for (const [kind, want] of model.counts) {
            if (want.ops === 0) continue;
            const labels = `{export="d",op="${kind}"}`;
            expect(text).toContain(`strata_export_requests_total${labels} ${want.ops}\n`);
            expect(text).toContain(`strata_export_bytes_total${labels} ${want.bytes}\n`);
            expect(text).toContain(`strata_export_errors_total${labels} ${want.errors}\n`);
            expect(text).toContain(`strata_export_request_duration_seconds_count${labels} ${want.ops - want.errors}\n`);
            expect(text).toContain(`strata_export_request_duration_seconds_bucket{export="d",op="${kind}",le="+Inf"} ${want.ops - want.errors}\n`);
          }
        } finally {
          await srv.close();
        }
      }),
      { numRuns: 25 },
    );
  });
});
