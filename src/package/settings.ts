import { SettingsError } from './errors.js';

/** Which kind of package a template's settings came from (`strata`: made here, not imported). */
export type PackageKind = 'ova' | 'ovf' | 'libvirt' | 'strata';
export const PACKAGE_KINDS: readonly PackageKind[] = ['ova', 'ovf', 'libvirt', 'strata'];

export type DiskBus = 'virtio' | 'scsi' | 'ide' | 'sata';
export const DISK_BUSES: readonly DiskBus[] = ['virtio', 'scsi', 'ide', 'sata'];

export type Firmware = 'bios' | 'efi';
export const FIRMWARES: readonly Firmware[] = ['bios', 'efi'];

/**
 * The guest OS as packages say it: OVF's OperatingSystemSection gives a CIM
 * number (ovf:id, 94 = Ubuntu 64-bit) and often a vendor type (vmw:osType
 * `ubuntu64Guest`, VirtualBox's `Ubuntu_64`); libvirt's domain gives a
 * libosinfo URI (`http://ubuntu.com/ubuntu/22.04`). Each is kept as given,
 * since none maps onto the others without loss.
 */
export interface OsSettings {
  ovfId: number | null;
  osType: string | null;
  osinfo: string | null;
  description: string | null;
}

export interface DiskSettings {
  /** The disk's name in the template (its volume's name). */
  name: string;
  /** Bytes the guest sees. */
  capacity: number;
  bus: DiskBus;
  /** 1 boots first; null: not in the boot order. */
  bootOrder: number | null;
}

export interface NetworkSettings {
  /** The network the adapter is connected to, as the package names it. */
  name: string;
  /** The adapter model, lower case as libvirt names it (virtio, e1000, vmxnet3); null: the platform's default. */
  model: string | null;
}

/** The VM settings a template keeps from the package it came from and writes back on export. */
export interface TemplateSettings {
  name: string;
  description: string | null;
  os: OsSettings;
  cpus: number;
  memoryBytes: number;
  firmware: Firmware;
  disks: DiskSettings[];
  networks: NetworkSettings[];
  source: PackageKind;
}

/** Bounds that keep a catalog entry small whatever a package says. */
export const SETTINGS_LIMITS = {
  nameChars: 255,
  descriptionChars: 16 * 1024,
  textChars: 1024,
  disks: 64,
  networks: 64,
  cpus: 4096,
  memoryBytes: 2 ** 52,
  capacity: 2 ** 53 - 1,
  jsonBytes: 64 * 1024,
} as const;

type Obj = Record<string, unknown>;

function object(value: unknown, field: string): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SettingsError(field, 'must be an object');
  return value as Obj;
}

function text(value: unknown, field: string, max: number): string {
  if (typeof value !== 'string') throw new SettingsError(field, 'must be a string');
  if (value.length === 0) throw new SettingsError(field, 'must not be empty');
  if (value.length > max) throw new SettingsError(field, `is ${value.length} characters, more than ${max}`);
  // A NUL or other control character cannot go into XML or a terminal line.
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(value)) throw new SettingsError(field, 'holds a control character');
  return value;
}

function optionalText(value: unknown, field: string, max: number): string | null {
  return value === null || value === undefined ? null : text(value, field, max);
}

function integer(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new SettingsError(field, 'must be an integer');
  if (value < min || value > max) throw new SettingsError(field, `is ${value}, outside ${min}..${max}`);
  return value;
}

function oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) throw new SettingsError(field, `must be one of ${allowed.join(', ')}`);
  return value as T;
}

function list(value: unknown, field: string, max: number): unknown[] {
  if (!Array.isArray(value)) throw new SettingsError(field, 'must be a list');
  if (value.length > max) throw new SettingsError(field, `has ${value.length} entries, more than ${max}`);
  return value;
}

function os(value: unknown): OsSettings {
  const o = object(value, 'os');
  return {
    ovfId: o.ovfId === null || o.ovfId === undefined ? null : integer(o.ovfId, 'os.ovfId', 0, 65535),
    osType: optionalText(o.osType, 'os.osType', SETTINGS_LIMITS.textChars),
    osinfo: optionalText(o.osinfo, 'os.osinfo', SETTINGS_LIMITS.textChars),
    description: optionalText(o.description, 'os.description', SETTINGS_LIMITS.textChars),
  };
}

function disk(value: unknown, i: number): DiskSettings {
  const f = `disks[${i}]`;
  const d = object(value, f);
  return {
    name: text(d.name, `${f}.name`, SETTINGS_LIMITS.nameChars),
    capacity: integer(d.capacity, `${f}.capacity`, 1, SETTINGS_LIMITS.capacity),
    bus: oneOf(d.bus, `${f}.bus`, DISK_BUSES),
    bootOrder: d.bootOrder === null || d.bootOrder === undefined ? null : integer(d.bootOrder, `${f}.bootOrder`, 1, SETTINGS_LIMITS.disks),
  };
}

function network(value: unknown, i: number): NetworkSettings {
  const f = `networks[${i}]`;
  const n = object(value, f);
  const model = optionalText(n.model, `${f}.model`, SETTINGS_LIMITS.textChars);
  if (model !== null && !/^[a-z0-9][a-z0-9._-]*$/.test(model)) throw new SettingsError(`${f}.model`, `'${model}' is not a model name (lower-case letters, digits, . _ -)`);
  return { name: text(n.name, `${f}.name`, SETTINGS_LIMITS.nameChars), model };
}

/**
 * Checks `value` (parsed JSON from the catalog, or settings a parser built)
 * against the model and returns it as a fresh object holding only the
 * model's fields. Disk names are unique and boot orders distinct.
 */
export function validateSettings(value: unknown): TemplateSettings {
  const s = object(value, 'settings');
  const settings: TemplateSettings = {
    name: text(s.name, 'name', SETTINGS_LIMITS.nameChars),
    description: optionalText(s.description, 'description', SETTINGS_LIMITS.descriptionChars),
    os: os(s.os),
    cpus: integer(s.cpus, 'cpus', 1, SETTINGS_LIMITS.cpus),
    memoryBytes: integer(s.memoryBytes, 'memoryBytes', 1024 * 1024, SETTINGS_LIMITS.memoryBytes),
    firmware: oneOf(s.firmware, 'firmware', FIRMWARES),
    disks: list(s.disks, 'disks', SETTINGS_LIMITS.disks).map(disk),
    networks: list(s.networks, 'networks', SETTINGS_LIMITS.networks).map(network),
    source: oneOf(s.source, 'source', PACKAGE_KINDS),
  };
  const names = new Set<string>();
  const orders = new Set<number>();
  settings.disks.forEach((d, i) => {
    if (names.has(d.name)) throw new SettingsError(`disks[${i}].name`, `'${d.name}' names two disks`);
    names.add(d.name);
    if (d.bootOrder !== null) {
      if (orders.has(d.bootOrder)) throw new SettingsError(`disks[${i}].bootOrder`, `${d.bootOrder} is given to two disks`);
      orders.add(d.bootOrder);
    }
  });
  const bytes = Buffer.byteLength(JSON.stringify(settings));
  if (bytes > SETTINGS_LIMITS.jsonBytes) throw new SettingsError('settings', `take ${bytes} bytes as JSON, more than ${SETTINGS_LIMITS.jsonBytes}`);
  return settings;
}

/** Settings as the catalog stores them. */
export function settingsToJson(settings: TemplateSettings): string {
  return JSON.stringify(validateSettings(settings));
}

/** Settings from the catalog's JSON; a damaged entry is a SettingsError. */
export function settingsFromJson(json: string): TemplateSettings {
  if (Buffer.byteLength(json) > SETTINGS_LIMITS.jsonBytes) throw new SettingsError('settings', `take more than ${SETTINGS_LIMITS.jsonBytes} bytes as JSON`);
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    throw new SettingsError('settings', `are not JSON: ${(err as Error).message}`);
  }
  return validateSettings(value);
}

/** Boot orders renumbered 1, 2, … in their order, as packages that keep only an order (OVF) give them back. */
export function normaliseBootOrder(disks: DiskSettings[]): DiskSettings[] {
  const ranked = disks
    .map((d, i) => ({ d, i }))
    .filter((x) => x.d.bootOrder !== null)
    .sort((a, b) => a.d.bootOrder! - b.d.bootOrder!);
  const rank = new Map(ranked.map((x, r) => [x.i, r + 1]));
  return disks.map((d, i) => ({ ...d, bootOrder: rank.get(i) ?? null }));
}
