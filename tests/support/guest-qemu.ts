import { spawn } from 'node:child_process';

/**
 * Boots the guest under qemu-system-x86_64 with software emulation (the KVM
 * device on these machines does not work for QEMU), the NBD export as its
 * virtio disk, and a hard timeout on the host side. The verdict is read from
 * the serial console.
 */
export type GuestPhase = 'write' | 'verify';
export type DriveCache = 'none' | 'writethrough';

export interface GuestBoot {
  vmlinuz: string;
  initrd: string;
  phase: GuestPhase;
  uri: string;
  cache: DriveCache;
  readonly: boolean;
  timeoutMs: number;
}

export interface GuestRun {
  /** `OK <n>` or `FAIL <why>`; undefined when the guest never printed a verdict. */
  verdict: string | undefined;
  /** name → sha256 from the guest's STRATA-SUM lines. */
  sums: Map<string, string>;
  console: string;
  exitCode: number | null;
  timedOut: boolean;
  elapsedMs: number;
}

export function qemuArgs(boot: GuestBoot): string[] {
  const drive = [
    `file=${boot.uri}`,
    'format=raw',
    'if=virtio',
    `cache=${boot.cache}`,
    'discard=unmap',
    ...(boot.readonly ? ['readonly=on'] : []),
  ].join(',');
  return [
    '-accel', 'tcg',
    '-nodefaults',
    '-no-reboot',
    '-display', 'none',
    '-serial', 'stdio',
    '-m', '256',
    '-smp', '1',
    '-kernel', boot.vmlinuz,
    '-initrd', boot.initrd,
    '-append', `console=ttyS0 panic=-1 loglevel=4 strata.phase=${boot.phase}`,
    '-drive', drive,
  ];
}

export function bootGuest(boot: GuestBoot): Promise<GuestRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', qemuArgs(boot), { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let timedOut = false;
    child.stdout.on('data', (c: Buffer) => (output += c.toString('latin1')));
    child.stderr.on('data', (c: Buffer) => (output += c.toString('latin1')));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, boot.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run qemu-system-x86_64: ${err.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const lines = output.replace(/\r/g, '').split('\n');
      const verdicts = lines.map((l) => /STRATA-GUEST: (.*)$/.exec(l)?.[1]).filter((v): v is string => v !== undefined);
      const sums = new Map<string, string>();
      for (const l of lines) {
        const m = /STRATA-SUM ([0-9a-f]{64}) (.+)$/.exec(l);
        if (m) sums.set(m[2], m[1]);
      }
      resolve({
        verdict: verdicts.at(-1),
        sums,
        console: output,
        exitCode: code,
        timedOut,
        elapsedMs: Date.now() - started,
      });
    });
  });
}

/** The end of the console, for a failure message that shows what the guest saw. */
export function consoleTail(run: GuestRun, lines = 40): string {
  return run.console.replace(/\r/g, '').split('\n').slice(-lines).join('\n');
}
