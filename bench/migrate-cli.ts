import { setTimeout as sleep } from 'node:timers/promises';
import { strata } from './chain-cli.js';

/** `strata migrate` as the benchmark and the guest test run it, and how they tell it has finished. */

/** The names `strata volume list POOL` gives (through the control socket when the pool is served). */
export async function volumeNames(home: string, pool: string): Promise<string[]> {
  const { stdout } = await strata(home, '--json', 'volume', 'list', pool);
  return (JSON.parse(stdout) as { name: string }[]).map((v) => v.name);
}

/**
 * Runs `strata migrate FROM/VOL TO [--online] [extraArgs]` and waits until FROM no
 * longer lists the volume (whether the command waits for the pivot or
 * hands back a job): the move is durable and the source freed. Wall time
 * from the command's start, process start-up included.
 */
export async function migrateVolume(home: string, from: string, volume: string, to: string, online: boolean, timeoutMs: number, extraArgs: string[] = []): Promise<{ seconds: number; output: string }> {
  const t0 = performance.now();
  const { stdout } = await strata(home, 'migrate', `${from}/${volume}`, to, ...(online ? ['--online'] : []), ...extraArgs);
  const deadline = Date.now() + timeoutMs;
  while ((await volumeNames(home, from)).includes(volume)) {
    if (Date.now() > deadline) {
      const jobs = await strata(home, 'job', 'list', from).then((r) => r.stdout, (e: Error) => e.message);
      throw new Error(`${timeoutMs} ms after strata migrate ${from}/${volume} ${to}, ${from} still holds the volume; jobs:\n${jobs}`);
    }
    await sleep(100);
  }
  return { seconds: (performance.now() - t0) / 1000, output: stdout };
}
