import type { BlockDevice } from '../blockdev/index.js';
import { volumeRuns, type Mappable } from '../host/volume-runs.js';
import type { ImageContent } from './image-writer.js';

/** A volume, or a served volume's NBD export, as what a writer writes: its block-status runs and its reads. */
export function deviceContent(device: BlockDevice & Mappable): ImageContent {
  return {
    size: device.size,
    runs: async function* () {
      for await (const run of volumeRuns(device)) yield { offset: run.offset, length: run.length, kind: run.type };
    },
    read: (buf, offset) => device.read(buf, offset),
  };
}
