import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Template packages built the way other platforms' tools lay them out, with
 * standard tools only: an OVF 1.x descriptor written here as VMware's
 * exports write it, disks made by qemu-img, the manifest by sha256sum and
 * the OVA by tar (ustar, descriptor first, then manifest, then disks).
 */
export interface PackageDiskSpec {
  /** The file the descriptor names (ovf:href). */
  href: string;
  /** Bytes the descriptor declares the guest sees. */
  capacity: number;
  format: 'vmdk-stream' | 'vmdk-sparse' | 'qcow2' | 'raw';
}

export interface VmSpec {
  name: string;
  cpus: number;
  memoryMiB: number;
  network: string;
  disks: PackageDiskSpec[];
}

const FORMAT_URI: Record<PackageDiskSpec['format'], string> = {
  'vmdk-stream': 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized',
  'vmdk-sparse': 'http://www.vmware.com/interfaces/specifications/vmdk.html#sparse',
  qcow2: 'http://www.gnome.org/~markmc/qcow-image-format.html',
  raw: 'raw',
};

export function ovfDescriptor(vm: VmSpec): string {
  const files = vm.disks.map((d, i) => `    <File ovf:id="file${i + 1}" ovf:href="${d.href}"/>`).join('\n');
  const disks = vm.disks
    .map((d, i) => `    <Disk ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:capacity="${d.capacity}" ovf:capacityAllocationUnits="byte" ovf:format="${FORMAT_URI[d.format]}"/>`)
    .join('\n');
  const drives = vm.disks
    .map(
      (_, i) =>
        `      <Item>\n        <rasd:AddressOnParent>${i}</rasd:AddressOnParent>\n        <rasd:ElementName>Hard disk ${i + 1}</rasd:ElementName>\n        <rasd:HostResource>ovf:/disk/vmdisk${i + 1}</rasd:HostResource>\n        <rasd:InstanceID>${10 + i}</rasd:InstanceID>\n        <rasd:Parent>3</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>`,
    )
    .join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
${files}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
${disks}
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="${vm.network}">
      <Description>The ${vm.network} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${vm.name}">
    <Info>A virtual machine</Info>
    <Name>${vm.name}</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${vm.name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>${vm.cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>${vm.cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>${vm.memoryMiB}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>${vm.memoryMiB}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
${drives}
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>${vm.network}</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>20</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}

/** A raw image of `size` bytes with a pattern at each `writes` offset (1 MiB each, its byte the index + 1), the rest holes. */
export function rawDisk(file: string, size: number, writes: number[]): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  const fd = fs.openSync(file, 'r+');
  try {
    writes.forEach((at, i) => fs.writeSync(fd, Buffer.alloc(1 << 20, i + 1), 0, 1 << 20, at));
  } finally {
    fs.closeSync(fd);
  }
}

/** `raw` converted by qemu-img into the package's disk format at `out`. */
export function convertDisk(raw: string, out: string, format: PackageDiskSpec['format']): void {
  const args = format === 'vmdk-stream' ? ['-O', 'vmdk', '-o', 'subformat=streamOptimized'] : format === 'vmdk-sparse' ? ['-O', 'vmdk', '-o', 'subformat=monolithicSparse'] : ['-O', format];
  if (format === 'raw') fs.copyFileSync(raw, out);
  else execFileSync('qemu-img', ['convert', '-f', 'raw', ...args, raw, out], { stdio: 'pipe' });
}

/** The OVF manifest of `files` in `dir`, from sha256sum's output, in OVF's `SHA256(file)= hex` lines. */
export function manifest(dir: string, files: string[]): string {
  const out = execFileSync('sha256sum', files, { cwd: dir, encoding: 'utf8' });
  return out
    .trim()
    .split('\n')
    .map((line) => {
      const [hex, name] = line.split(/\s+\*?/);
      return `SHA256(${name})= ${hex}\n`;
    })
    .join('');
}

/** An OVF directory: NAME.ovf, NAME.mf and the disks (already in `dir`); returns the descriptor's path. */
export function writeOvfDir(dir: string, vm: VmSpec, opts: { manifest?: boolean } = {}): string {
  const ovf = `${vm.name}.ovf`;
  fs.writeFileSync(path.join(dir, ovf), ovfDescriptor(vm));
  if (opts.manifest !== false) fs.writeFileSync(path.join(dir, `${vm.name}.mf`), manifest(dir, [ovf, ...vm.disks.map((d) => d.href).filter((h) => fs.existsSync(path.join(dir, h)))]));
  return path.join(dir, ovf);
}

/** The OVA of an OVF directory, by tar: descriptor, manifest, then the disks in References order. */
export function tarOva(dir: string, vm: VmSpec, out: string, members?: string[]): void {
  const names = members ?? [`${vm.name}.ovf`, ...(fs.existsSync(path.join(dir, `${vm.name}.mf`)) ? [`${vm.name}.mf`] : []), ...vm.disks.map((d) => d.href)];
  execFileSync('tar', ['--format=ustar', '-cf', out, '-C', dir, ...names], { stdio: 'pipe' });
}

/** `tar tvf` of an archive: its members' names in order. */
export function tarMembers(file: string): string[] {
  return execFileSync('tar', ['tf', file], { encoding: 'utf8' }).trim().split('\n');
}
