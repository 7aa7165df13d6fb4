/**
 * Writes the "newc" cpio archive the Linux kernel unpacks as its initramfs.
 * Written here rather than with a cpio tool because an initramfs needs a
 * /dev/console device node, and making one on disk first would need root.
 */
export type CpioEntry =
  | { kind: 'dir'; path: string }
  | { kind: 'file'; path: string; data: Uint8Array; executable?: boolean }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  let size = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    size += b.length;
  };
  const pad = () => {
    if (size % 4) push(Buffer.alloc(4 - (size % 4)));
  };
  const add = (name: string, mode: number, data: Uint8Array, rdev: [number, number] = [0, 0]) => {
    const nameBytes = Buffer.from(`${name}\0`);
    const fields = [ino++, mode, 0, 0, mode & S_IFDIR ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0];
    push(Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`, 'ascii'));
    push(nameBytes);
    pad();
    push(Buffer.from(data));
    pad();
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    switch (e.kind) {
      case 'dir':
        add(name, S_IFDIR | 0o755, new Uint8Array());
        break;
      case 'file':
        add(name, S_IFREG | (e.executable ? 0o755 : 0o644), e.data);
        break;
      case 'symlink':
        add(name, S_IFLNK | 0o777, Buffer.from(e.target));
        break;
      case 'chardev':
        add(name, S_IFCHR | 0o600, new Uint8Array(), [e.major, e.minor]);
        break;
    }
  }
  add('TRAILER!!!', 0, new Uint8Array());
  return Buffer.concat(parts);
}
