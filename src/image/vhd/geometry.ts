/**
 * CHS geometry of a VHD and the size readers take from it. Virtual PC and
 * qemu (creator `qemu`) size a disk by cylinders x heads x sectors, Hyper-V
 * and others by the footer's current size; qemu-img picks by the creator
 * application, and so does Strata, so that both agree on every file.
 */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** 65535 x 16 x 255: the largest geometry; a footer carrying it means "use the current size". */
export const MAX_GEOMETRY: Geometry = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 };
export const MAX_GEOMETRY_SECTORS = 65535 * 16 * 255;
/** qemu's limit: 2040 GiB in 512-byte sectors. */
export const MAX_SECTORS = 0xff000000;

export const chsSectors = (g: Geometry): number => g.cylinders * g.heads * g.sectorsPerTrack;

/** The geometry of the VHD specification's appendix for `sectors` (rounded down where it cannot be exact). */
export function geometryFor(sectors: number): Geometry {
  const total = Math.min(sectors, MAX_GEOMETRY_SECTORS);
  let heads: number;
  let spt: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(4, Math.ceil(cth / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

/** Creator applications whose disks are sized by the footer's current size (qemu's table). */
const SIZED_BY_CURRENT_SIZE = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];

/** Sectors the guest sees, as qemu-img computes them from a footer. */
export function visibleSectors(creatorApp: string, geometry: Geometry, currentSize: number): number {
  const chs = chsSectors(geometry);
  if (SIZED_BY_CURRENT_SIZE.includes(creatorApp) || chs === MAX_GEOMETRY_SECTORS) return Math.floor(currentSize / 512);
  return chs;
}

/** What an import says when the two sizes a footer states disagree, and which one it took. */
export function sizeNotes(creatorApp: string, visibleBytes: number, currentSize: number): string[] {
  if (visibleBytes === currentSize) return [];
  const by = visibleBytes === Math.floor(currentSize / 512) * 512 ? 'the current size' : 'the CHS geometry';
  return [`the footer's current size is ${currentSize} bytes and its CHS geometry gives another; ${visibleBytes} bytes are taken, by ${by}, as qemu-img takes them for creator ${JSON.stringify(creatorApp)}`];
}

/**
 * Creator and geometry for a disk of exactly `sectors`: a geometry that is
 * exact keeps creator `qemu` (every reader agrees); otherwise the largest
 * geometry with creator `qem2`, as `qemu-img -o force_size=on` writes, so
 * that readers of the current size (qemu, Hyper-V, VirtualBox, Xen) see it exactly.
 */
export function geometryToWrite(sectors: number): { creatorApp: string; geometry: Geometry } {
  const g = geometryFor(sectors);
  if (chsSectors(g) === sectors && chsSectors(g) !== MAX_GEOMETRY_SECTORS) return { creatorApp: 'qemu', geometry: g };
  return { creatorApp: 'qem2', geometry: MAX_GEOMETRY };
}
