import type { ControlProgress } from '../host/control-protocol.js';
import type { NbdPushProgress } from './nbd-push-request.js';

const PHASES: ReadonlySet<string> = new Set(['copy', 'verify', 'ready']);

/** Whether a progress line from the server is a push's (it names the job and the phase). */
export function isNbdPushProgress(p: ControlProgress): p is NbdPushProgress {
  const r = p as unknown as Record<string, unknown>;
  return typeof r.job === 'number' && typeof r.phase === 'string' && PHASES.has(r.phase) && typeof r.done === 'number' && typeof r.total === 'number';
}
