import type { PushUi } from '../src/migrate/nbd-push.js';
import { ProgressBar } from './output.js';

/** A progress bar on stderr for each phase of a push (copy, then verify), as the other copies draw theirs. */
export function pushProgressUi(ref: string): PushUi {
  let bar: ProgressBar | undefined;
  let phase = '';
  return {
    progress(e) {
      if (e.phase !== phase) {
        bar?.finish();
        phase = e.phase;
        bar = new ProgressBar(`${e.phase} ${ref}`, e.total);
      }
      bar?.update(e.done);
    },
    finish() {
      bar?.finish();
    },
  };
}
