import { formatSize } from '../bin/size.js';
import type { Direction, ImagesReport, ImageTool } from './images-run.js';
import { markdownTable, median } from './stats.js';

/** Everything one run of bench/images.ts measured, as the JSON file holds it. */
export interface ImagesRun {
  date: string;
  host: { cpus: number; load: number[] };
  options: Record<string, unknown>;
  images: ImagesReport;
}

export function imagesMarkdown(r: ImagesRun): string {
  const im = r.images;
  const rounds = new Set(im.samples.map((s) => s.round)).size;
  const cases = [...new Set(im.samples.map((s) => s.case))];
  const mb = (c: string, d: Direction, t: ImageTool): number => median(im.samples.filter((s) => s.case === c && s.direction === d && s.tool === t).map((s) => s.mbPerSec));
  const rows = cases.map((c) => {
    const cells: string[] = [c, formatSize(im.fileBytes[c] ?? 0)];
    for (const d of ['import', 'export'] as const) {
      const s = mb(c, d, 'strata');
      const q = mb(c, d, 'qemu-img convert');
      cells.push(s.toFixed(0), q.toFixed(0), `${(s / q).toFixed(2)}×`);
    }
    cells.push(im.sameData[c] === undefined ? '' : im.sameData[c] ? 'same' : 'DIFFERENT');
    return cells;
  });
  return [
    `${r.host.cpus} CPUs, load ${r.host.load.map((l) => l.toFixed(1)).join(' ')} when the run ended; ${r.date}`,
    '',
    `**Image import and export** of a ${formatSize(im.size)} disk holding ${formatSize(im.dataBytes)} of random data in 1M extents (the rest holes), one file pool; ` +
      `median of ${rounds} round${rounds === 1 ? '' : 's'}, the tools alternating; MB/s = data bytes / wall time (strata's CLI start-up included). ` +
      'qemu-img: `convert -n --target-is-zero FILE nbd://…` into a new volume served by `strata serve`, and `convert -O F nbd://… FILE` from it.',
    '',
    markdownTable(['format', 'file', 'import strata MB/s', 'import qemu-img MB/s', 'import ratio', 'export strata MB/s', 'export qemu-img MB/s', 'export ratio', 'imported = image'], rows),
  ].join('\n');
}
