import type { ListenAddress } from './server.js';

export interface LibvirtDiskOptions {
  /** The export name the server answers to. */
  exportName: string;
  address: ListenAddress;
  /** The guest's device name: vda, vdb… (sda… on scsi and sata, hda… on ide). */
  target: string;
  /** The guest's disk bus; virtio unless given. */
  bus?: 'virtio' | 'scsi' | 'sata' | 'ide';
  /** The disk's place in the boot order (libvirt's per-device `<boot order='N'/>`). */
  bootOrder?: number;
  /** The server takes (or requires) STARTTLS: libvirt then uses the host's TLS credentials (nbd_tls_x509_cert_dir in qemu.conf). */
  tls?: boolean;
  readOnly?: boolean;
}

/** Guest device names per bus: vd, sd or hd, then letters. */
const TARGETS = { virtio: /^vd[a-z]{1,3}$/, scsi: /^sd[a-z]{1,3}$/, sata: /^sd[a-z]{1,3}$/, ide: /^hd[a-z]{1,3}$/ } as const;

/**
 * The `<disk type='network'>` element of a libvirt domain that attaches an
 * export (`virsh attach-device DOMAIN FILE`, or pasted into `<devices>`).
 * The format is raw: the export is the volume's bytes. discard='unmap'
 * passes the guest's TRIMs through, which give thin volumes their space back.
 */
export function libvirtDiskXml(opts: LibvirtDiskOptions): string {
  const bus = opts.bus ?? 'virtio';
  if (!TARGETS[bus].test(opts.target)) throw new RangeError(bus === 'virtio' ? `'${opts.target}' is not a virtio disk name (vda, vdb, …)` : `'${opts.target}' is not a ${bus} disk name (${bus === 'ide' ? 'hda' : 'sda'}, …)`);
  if (opts.bootOrder !== undefined && !(Number.isSafeInteger(opts.bootOrder) && opts.bootOrder > 0)) throw new RangeError(`boot order ${opts.bootOrder} is not a positive integer`);
  const a = opts.address;
  const host = 'socket' in a ? `<host transport='unix' socket='${attr(a.socket)}'/>` : `<host name='${attr(a.host)}' port='${a.port}'/>`;
  const tls = opts.tls === true ? " tls='yes'" : '';
  return [
    "<disk type='network' device='disk'>",
    "  <driver name='qemu' type='raw' discard='unmap'/>",
    `  <source protocol='nbd' name='${attr(opts.exportName)}'${tls}>`,
    `    ${host}`,
    '  </source>',
    `  <target dev='${opts.target}' bus='${bus}'/>`,
    ...(opts.bootOrder !== undefined ? [`  <boot order='${opts.bootOrder}'/>`] : []),
    ...(opts.readOnly === true ? ['  <readonly/>'] : []),
    '</disk>',
    '',
  ].join('\n');
}

function attr(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}
