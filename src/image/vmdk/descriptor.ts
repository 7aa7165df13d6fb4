import { randomBytes } from 'node:crypto';

/** One extent line: `RW 8192 SPARSE "disk.vmdk"` (and an offset for FLAT extents). */
export interface ExtentLine {
  access: string;
  sectors: number;
  type: string;
  file: string | null;
}

/** What Strata needs of a descriptor: the header keys, the extents and the disk database. */
export interface Descriptor {
  createType: string | null;
  cid: string | null;
  parentCid: string | null;
  parentFileNameHint: string | null;
  extents: ExtentLine[];
  /** `ddb.*` entries, unquoted. */
  ddb: Map<string, string>;
}

/** A parentCID of all ones: the disk has no parent. */
export const NO_PARENT = 'ffffffff';

const unquote = (v: string): string => (v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v);

/** Parses descriptor text: `key=value` lines, extent lines and `ddb.` keys; comments and unknown keys are skipped. */
export function parseDescriptor(text: string): Descriptor {
  const d: Descriptor = { createType: null, cid: null, parentCid: null, parentFileNameHint: null, extents: [], ddb: new Map() };
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const extent = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?/.exec(line);
    if (extent) {
      d.extents.push({ access: extent[1]!, sectors: Number(extent[2]), type: extent[3]!, file: extent[4] ?? null });
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    const value = unquote(line.slice(eq + 1).trim());
    if (key.startsWith('ddb.')) d.ddb.set(key, value);
    else if (key === 'createType') d.createType = value;
    else if (key === 'CID') d.cid = value.toLowerCase();
    else if (key === 'parentCID') d.parentCid = value.toLowerCase();
    else if (key === 'parentFileNameHint') d.parentFileNameHint = value;
  }
  return d;
}

/** The controller a guest sees the disk on; it sets the geometry VMware expects for it. */
export type AdapterType = 'ide' | 'lsilogic' | 'buslogic' | 'legacyESX';
export const ADAPTER_TYPES: readonly AdapterType[] = ['ide', 'lsilogic', 'buslogic', 'legacyESX'];

export interface DescriptorFields {
  createType: 'monolithicSparse' | 'streamOptimized';
  /** Sectors of the one extent. */
  sectors: number;
  /** The extent's file name as the descriptor records it (the image's own base name). */
  fileName: string;
  adapterType: AdapterType;
  /** ddb.virtualHWVersion: the oldest virtual hardware that may open the disk; "4" is what qemu-img writes and every VMware product reads. */
  hwVersion: string;
}

/** A new descriptor for one sparse extent with no parent. */
export function writeDescriptor(f: DescriptorFields): string {
  // VMware's geometry: 16 heads on IDE (cylinders capped as a BIOS sees them), 255 on SCSI.
  const heads = f.adapterType === 'ide' ? 16 : 255;
  const cylinders = Math.max(1, Math.min(f.adapterType === 'ide' ? 16383 : 65535, Math.floor(f.sectors / (heads * 63))));
  const name = f.fileName.replace(/"/g, '');
  return [
    '# Disk DescriptorFile',
    'version=1',
    `CID=${randomBytes(4).toString('hex')}`,
    `parentCID=${NO_PARENT}`,
    `createType="${f.createType}"`,
    '',
    '# Extent description',
    `RW ${f.sectors} SPARSE "${name}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    `ddb.virtualHWVersion = "${f.hwVersion}"`,
    `ddb.geometry.cylinders = "${cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    'ddb.geometry.sectors = "63"',
    `ddb.adapterType = "${f.adapterType}"`,
    '',
  ].join('\n');
}
