import { Option } from 'commander';

/** As qemu-nbd --cache: writeback goes through the host page cache, none opens the pool's files with O_DIRECT. */
export type CacheMode = 'none' | 'writeback';

/** `--cache none|writeback`, for every command that opens a pool's files. */
export function cacheOption(what: string): Option {
  return new Option('--cache <mode>', `host page cache for ${what}: writeback (use it) or none (O_DIRECT, as qemu cache=none)`).choices(['none', 'writeback']).default('writeback');
}
