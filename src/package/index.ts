/** Template packages: OVF descriptors, OVA archives, OVF directories, libvirt domain XML, and the settings they carry. */
export { PackageError, SettingsError, UnsupportedPackageError } from './errors.js';
export { normaliseBootOrder, settingsFromJson, settingsToJson, validateSettings, SETTINGS_LIMITS, type DiskBus, type DiskSettings, type Firmware, type NetworkSettings, type OsSettings, type PackageKind, type TemplateSettings } from './settings.js';
export { parseOvf, type OvfDescriptor, type OvfDisk, type OvfFile } from './ovf-descriptor.js';
export { writeOvf, type OvfDiskFile } from './ovf-write.js';
export { VMDK_STREAM_URI } from './ovf-names.js';
export { readOva, type PackageResult, type ReadPackageOptions } from './ova-reader.js';
export { findDescriptor, readOvfDir } from './ovf-dir.js';
export { hashedSink, writeOva, type OvaDiskMember, type OvaMember, type WriteOvaOptions } from './ova-writer.js';
export { openPackageDisk, type PackageDisk } from './package-disk.js';
export { manifestText, parseManifest } from './manifest.js';
export { checkHref } from './href.js';
export { domainSettings, parseDomain, writeDomain, type DomainExport, type LibvirtDescriptor, type LibvirtDisk, type ParseDomainOptions } from './libvirt-domain.js';
export { writeOvfDir } from './ovf-dir-writer.js';
