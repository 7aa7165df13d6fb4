import type { DiskFormat } from '../image/image-reader.js';

/**
 * The namespaces OVF descriptors use. The envelope's URI changed between
 * OVF 1.x and 2.x, and oVirt writes the 1.x one with a trailing slash.
 */
export const OVF_NS = ['http://schemas.dmtf.org/ovf/envelope/1', 'http://schemas.dmtf.org/ovf/envelope/1/', 'http://schemas.dmtf.org/ovf/envelope/2'] as const;
export const OVF1 = OVF_NS[0];
export const RASD = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData';
export const VSSD = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData';
/** OVF 2.x items for disks and network ports (StorageItem, EthernetPortItem). */
export const SASD = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData';
export const EPASD = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData';
export const VMW = 'http://www.vmware.com/schema/ovf';
export const VBOX = 'http://www.virtualbox.org/ovf/machine';
export const XSI = 'http://www.w3.org/2001/XMLSchema-instance';
export const CIM = 'http://schemas.dmtf.org/wbem/wscim/1/common';

/** What the descriptor's ovf:format URI says a disk file is. */
export interface DiskFileFormat {
  format: DiskFormat;
  subformat: string | null;
}

/** The URI VMware, VirtualBox and oVirt all read for the disks an OVA carries. */
export const VMDK_STREAM_URI = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

const URIS: { test: RegExp; format: DiskFormat; subformat: string | null }[] = [
  { test: /vmdk\.html#streamoptimized$/i, format: 'vmdk', subformat: 'streamOptimized' },
  { test: /vmdk\.html#(sparse|monolithicsparse)$/i, format: 'vmdk', subformat: 'monolithicSparse' },
  { test: /qcow/i, format: 'qcow2', subformat: null },
  { test: /vhdx/i, format: 'vhdx', subformat: null },
  // Microsoft's VHD specification pages, under the addresses tools cite.
  { test: /(vhd|bb676673|137171)/i, format: 'vhd', subformat: null },
  { test: /(^|[/#:])raw$/i, format: 'raw', subformat: null },
];

/**
 * The format of a disk from its ovf:format URI and, in oVirt's descriptors,
 * ovf:volume-format (COW: qcow2, RAW: raw), which says what the file is
 * where the URI does not (oVirt writes the VMDK sparse URI for qcow2 files).
 * Null: not a format Strata knows.
 */
export function diskFileFormat(uri: string | undefined, volumeFormat: string | undefined): DiskFileFormat | null {
  if (volumeFormat?.toUpperCase() === 'COW') return { format: 'qcow2', subformat: null };
  if (volumeFormat?.toUpperCase() === 'RAW') return { format: 'raw', subformat: null };
  if (uri === undefined || uri === '') return null;
  const hit = URIS.find((u) => u.test.test(uri.trim()));
  return hit ? { format: hit.format, subformat: hit.subformat } : null;
}

/** The ovf:format URI for a disk file Strata writes. */
export function formatUri(format: DiskFormat, subformat: string | null): string {
  switch (format) {
    case 'vmdk':
      return subformat === 'monolithicSparse' ? 'http://www.vmware.com/interfaces/specifications/vmdk.html#sparse' : VMDK_STREAM_URI;
    case 'qcow2':
      return 'http://www.gnome.org/~markmc/qcow-image-format.html';
    case 'vhd':
      return 'http://technet.microsoft.com/en-us/library/bb676673.aspx';
    case 'vhdx':
      return 'https://learn.microsoft.com/openspecs/windows_protocols/ms-vhdx';
    case 'raw':
      return 'raw';
  }
}

/** Network adapter models as OVF ResourceSubType names them (VMware, VirtualBox), to libvirt's lower-case names. */
const NIC_MODELS: Record<string, string> = {
  e1000: 'e1000',
  e1000e: 'e1000e',
  vmxnet3: 'vmxnet3',
  vmxnet2: 'vmxnet2',
  virtio: 'virtio',
  pcnet32: 'pcnet',
  pcnetpci: 'pcnet',
  pcnetfast: 'pcnet',
  rtl8139: 'rtl8139',
  // oVirt's VmInterfaceType numbers.
  '0': 'rtl8139',
  '1': 'rtl8139',
  '2': 'e1000',
  '3': 'virtio',
  '6': 'e1000e',
};

export function nicModelFromOvf(subtype: string | undefined): string | null {
  if (subtype === undefined || subtype.trim() === '') return null;
  const key = subtype.trim().toLowerCase();
  return NIC_MODELS[key] ?? (/^[a-z0-9][a-z0-9._-]*$/.test(key) ? key : null);
}

const NIC_SUBTYPES: Record<string, string> = { e1000: 'E1000', e1000e: 'E1000e', vmxnet3: 'VmxNet3', vmxnet2: 'VmxNet2', pcnet: 'PCNet32', virtio: 'virtio', rtl8139: 'rtl8139' };

export function nicModelToOvf(model: string): string {
  return NIC_SUBTYPES[model] ?? model;
}
