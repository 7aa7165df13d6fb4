import { parseRaidLevel, type LevelDescriptor, type RaidLevel } from './level.js';
import { raid0 } from './raid0.js';
import { raid1 } from './raid1.js';
import { raid10 } from './raid10.js';
import { raid5 } from './raid5.js';
import { raid6 } from './raid6.js';
import { RaidError } from '../errors.js';

export { RAID_LEVELS, parseRaidLevel, type LevelDescriptor, type RaidLevel } from './level.js';
export { MirrorLayout } from './mirror-layout.js';
export { ParityLayout } from './parity-layout.js';

const LEVELS: Record<RaidLevel, LevelDescriptor> = { 0: raid0, 1: raid1, 5: raid5, 6: raid6, 10: raid10 };

export function levelDescriptor(level: number): LevelDescriptor {
  const known = parseRaidLevel(level);
  const d = known === undefined ? undefined : LEVELS[known];
  if (!d) throw new RaidError('EINVAL', `unknown RAID level ${level} (use 0, 1, 5, 6 or 10)`);
  return d;
}
