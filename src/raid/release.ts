import type { BlockDevice } from '../blockdev/index.js';
import { encodeSuperblock, newestSuperblock, RELEASED_MAGIC, SUPERBLOCK_SIZE } from './superblock.js';

/**
 * Marks a device that has left the array (removed, replaced, or a failed
 * member a spare took over from) as released, then closes it: both superblock
 * slots are rewritten under RELEASED_MAGIC, so assembly and a scan no longer
 * take it for a member of the array (it would otherwise still show the old
 * role as active, its last write), while examine still says where it came
 * from. The array has already recorded the change on its members. Best
 * effort: a device that cannot be written (the reason it failed, often) is
 * closed as it is, and assembly still refuses it as stale by event count.
 */
export async function releaseMember(dev: BlockDevice, arrayEvents: number): Promise<void> {
  try {
    if (dev.readOnly) return;
    const header = Buffer.alloc(2 * SUPERBLOCK_SIZE);
    await dev.read(header, 0);
    const sb = newestSuperblock(header);
    if (sb) {
      const block = encodeSuperblock({ ...sb, events: Math.max(sb.events, arrayEvents), clean: true }, RELEASED_MAGIC);
      await dev.write(block, 0);
      await dev.write(block, SUPERBLOCK_SIZE);
      await dev.flush();
    }
  } catch {
    // Left as it was: see above.
  } finally {
    await dev.close().catch(() => undefined);
  }
}
