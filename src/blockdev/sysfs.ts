import type fs from 'node:fs';

/** /sys/dev/block/MAJOR:MINOR of a raw block device, from its st_rdev (Node has no ioctls to ask the device itself). */
export function sysfsBlockDir(st: fs.Stats): string {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((Math.floor(st.rdev / 4096) & 0xfff00));
  return `/sys/dev/block/${major}:${minor}`;
}
