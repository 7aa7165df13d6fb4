import type { ListenAddress } from './server.js';

export interface LibvirtDiskOptions {
  /** The export name the server answers to. */
  exportName: string;
  address: ListenAddress;
  /** The guest's device name: vda, vdb… */
  target: string;
  /** The server takes (or requires) STARTTLS: libvirt then uses the host's TLS credentials (nbd_tls_x509_cert_dir in qemu.conf). */
  tls?: boolean;
  readOnly?: boolean;
}

/** A guest device name virtio-blk takes: vd, then letters. */
const TARGET = /^vd[a-z]{1,3}$/;

/**
 * The `<disk type='network'>` element of a libvirt domain that attaches an
 * export (`virsh attach-device DOMAIN FILE`, or pasted into `<devices>`).
 * The format is raw: the export is the volume's bytes. discard='unmap'
 * passes the guest's TRIMs through, which give thin volumes their space back.
 */
export function libvirtDiskXml(opts: LibvirtDiskOptions): string {
  if (!TARGET.test(opts.target)) throw new RangeError(`'${opts.target}' is not a virtio disk name (vda, vdb, …)`);
  const a = opts.address;
  const host = 'socket' in a ? `<host transport='unix' socket='${attr(a.socket)}'/>` : `<host name='${attr(a.host)}' port='${a.port}'/>`;
  const tls = opts.tls === true ? " tls='yes'" : '';
  return [
    "<disk type='network' device='disk'>",
    "  <driver name='qemu' type='raw' discard='unmap'/>",
    `  <source protocol='nbd' name='${attr(opts.exportName)}'${tls}>`,
    `    ${host}`,
    '  </source>',
    `  <target dev='${opts.target}' bus='virtio'/>`,
    ...(opts.readOnly === true ? ['  <readonly/>'] : []),
    '</disk>',
    '',
  ].join('\n');
}

function attr(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}
