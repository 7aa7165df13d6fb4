/**
 * Image formats Strata cannot read yet, told apart by their magic so that an
 * import never copies a qcow2 or VMDK container into a volume as raw bytes
 * (a guest would then see the container's metadata as its disk).
 */
export type ImageFormat = 'qcow' | 'qcow2' | 'qed' | 'vmdk' | 'vhd' | 'vhdx' | 'vdi' | 'luks';

/** Bytes of the start of an image that `detectFormat` looks at. */
export const HEAD_BYTES = 4096;
/** Bytes of the end of an image that hold a fixed VHD's footer. */
export const TAIL_BYTES = 512;

const ascii = (buf: Buffer, at: number, text: string): boolean => buf.length >= at + text.length && buf.toString('latin1', at, at + text.length) === text;

/**
 * The format of an image from its first bytes (`head`, HEAD_BYTES or all the
 * image has) and, when the image has a known end, its last TAIL_BYTES
 * (`tail`): a fixed VHD is raw data followed by a footer. Null: raw, or at
 * least nothing known.
 */
export function detectFormat(head: Buffer, tail?: Buffer): ImageFormat | null {
  if (head.length >= 8 && head.readUInt32BE(0) === 0x514649fb) return head.readUInt32BE(4) === 1 ? 'qcow' : 'qcow2';
  if (ascii(head, 0, 'QED\0')) return 'qed';
  // A hosted sparse extent starts KDMV, ESX Server's sparse extent COWD; a descriptor file (monolithicFlat, split formats) starts with its text.
  if (ascii(head, 0, 'KDMV') || ascii(head, 0, 'COWD') || ascii(head, 0, '# Disk DescriptorFile')) return 'vmdk';
  if (ascii(head, 0, 'vhdxfile')) return 'vhdx';
  // Dynamic and differencing VHDs carry a copy of the footer at offset 0; fixed ones only at the end.
  if (ascii(head, 0, 'conectix') || (tail !== undefined && tail.length >= 512 && ascii(tail, tail.length - 512, 'conectix'))) return 'vhd';
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return 'vdi';
  if (ascii(head, 0, 'LUKS\xba\xbe')) return 'luks';
  return null;
}

/** How a format is called in the refusal: the name people know it by, as qemu-img's -f takes it in parentheses. */
export function formatName(format: ImageFormat): string {
  const names: Record<ImageFormat, string> = {
    qcow: 'qcow (version 1)',
    qcow2: 'qcow2',
    qed: 'QED',
    vmdk: 'VMDK',
    vhd: 'VHD (qemu-img -f vpc)',
    vhdx: 'VHDX',
    vdi: 'VDI',
    luks: 'LUKS',
  };
  return names[format];
}
