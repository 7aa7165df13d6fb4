export { NbdServer, DEFAULT_MAX_BUFFER, DEFAULT_MAX_PER_ADDRESS, MIN_MAX_BUFFER, type NbdServerOptions, type NbdServerStats, type ListenAddress } from './server.js';
export { StaticExportSource, type ExportSource, type ExportListing, type OpenedExport, type StaticExport } from './exports.js';
export { loadTls, type TlsMode, type TlsSetup, type TlsFiles } from './tls.js';
export { SparseMemoryDevice } from './sparse-memory.js';
export { NbdClient, NbdClientError, type NbdClientOptions, type ExportDetails } from './client.js';
export { NbdDevice } from './client-device.js';
export { nbdUri } from './uri.js';
export { ExportStats, CommandStats, COMMAND_KINDS, LATENCY_BOUNDS, type CommandKind } from './export-stats.js';
export { libvirtDiskXml, type LibvirtDiskOptions } from './libvirt-disk.js';
