import { nbdUri, type ExportListing, type ListenAddress } from '../src/nbd/index.js';
import type { ClientLines } from './qemu-lines.js';

/** What `strata serve --json` prints once it listens: one document, for scripts that start a server and then use it. */
export interface ServeDocument {
  /** Every address listened on, as bound: a port 0 asked for is the port the system picked. */
  listen: ListenAddress[];
  exports: Array<{ name: string; description?: string; uris: string[] }>;
  /** The libnbd URIs with their TLS parameters, when TLS is on. */
  tlsUris: string[];
  metrics?: string;
  qemu: string;
  /** What the QEMU line leaves to fill in (the human output prints these on stderr). */
  notes: string[];
}

export function serveDocument(bound: ListenAddress[], exports: ExportListing[], lines: ClientLines, metricsUrl: string | undefined): ServeDocument {
  return {
    listen: bound,
    exports: exports.map((e) => ({ name: e.name, ...(e.description !== undefined ? { description: e.description } : {}), uris: bound.map((b) => nbdUri(b, e.name)) })),
    tlsUris: lines.tlsUris,
    ...(metricsUrl !== undefined ? { metrics: metricsUrl } : {}),
    qemu: lines.qemu,
    notes: lines.notes,
  };
}
