/**
 * /sys/dev/block/MAJOR:MINOR for a device number (a raw device's st_rdev, or
 * the st_dev of the file system a file is on): Node has no ioctls to ask the
 * device itself.
 */
export function sysfsBlockDir(devt: number): string {
  const major = Math.floor(devt / 256) & 0xfff;
  const minor = (devt & 0xff) | ((Math.floor(devt / 4096) & 0xfff00));
  return `/sys/dev/block/${major}:${minor}`;
}
