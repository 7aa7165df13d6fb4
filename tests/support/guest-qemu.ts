import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Boots the guest under qemu-system-x86_64 with software emulation (the KVM
 * device on these machines does not work for QEMU), the NBD export as its
 * virtio disk, and a hard timeout on the host side. The verdict is read from
 * the serial console.
 */
export type GuestPhase = 'write' | 'verify' | 'soak';
export type DriveCache = 'none' | 'writethrough';

export interface GuestBoot {
  vmlinuz: string;
  initrd: string;
  phase: GuestPhase;
  uri: string;
  cache: DriveCache;
  readonly: boolean;
  timeoutMs: number;
  /** More QEMU options (a QMP socket, -incoming). */
  extraArgs?: string[];
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
    ...(boot.extraArgs ?? []),
  ];
}

export function bootGuest(boot: GuestBoot): Promise<GuestRun> {
  return startVm(qemuArgs(boot), boot.timeoutMs).done;
}

/** A running qemu-system-x86_64 whose serial console the host reads and types into. */
export interface GuestVm {
  pid: number;
  /** Everything the console printed so far. */
  console(): string;
  /** Resolves with the first match of `pattern` on the console (searched from the start), rejects on exit or timeout. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** Types one line on the serial console. */
  send(line: string): void;
  /** Resolves when QEMU has exited (killed at the hard timeout). */
  done: Promise<GuestRun>;
  kill(): void;
}

/** Every QEMU started and not yet gone, so that a test that timed out does not leave its VMs running. */
const live = new Set<ChildProcess>();

export function killAllVms(): void {
  for (const child of live) child.kill('SIGKILL');
}

export function startVm(args: string[], timeoutMs: number): GuestVm {
  const started = Date.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  let output = '';
  let timedOut = false;
  /** QEMU exited and its output is all read. */
  let closed = false;
  const watchers = new Set<() => void>();
  const onOutput = (c: Buffer) => {
    output += c.toString('latin1');
    for (const w of [...watchers]) w();
  };
  child.stdout.on('data', onOutput);
  child.stderr.on('data', onOutput);
  // QEMU gone before it read a line typed for it is the test's business, not an unhandled error.
  child.stdin.on('error', () => undefined);
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const done = new Promise<GuestRun>((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run qemu-system-x86_64: ${err.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      closed = true;
      for (const w of [...watchers]) w();
      resolve({ ...parseConsole(output), console: output, exitCode: code, timedOut, elapsedMs: Date.now() - started });
    });
  });
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    pid: child.pid ?? -1,
    console: () => output,
    waitFor(pattern, waitMs) {
      return new Promise((resolve, reject) => {
        const tail = () => output.replace(/\r/g, '').split('\n').slice(-30).join('\n');
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          watchers.delete(check);
          settle();
        };
        const check = () => {
          const m = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(output.replace(/\r/g, ''));
          if (m) finish(() => resolve(m));
          else if (closed) finish(() => reject(new Error(`QEMU exited before the console showed ${pattern}; it ends:\n${tail()}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`the console did not show ${pattern} within ${waitMs} ms; it ends:\n${tail()}`))), waitMs);
        watchers.add(check);
        check();
      });
    },
    send(line) {
      child.stdin.write(`${line}\n`);
    },
    done,
    kill() {
      if (!exited()) child.kill('SIGKILL');
    },
  };
}

/** The verdict (`OK <n>` or `FAIL <why>`) and the STRATA-SUM lines of a console. */
export function parseConsole(output: string): { verdict: string | undefined; sums: Map<string, string> } {
  const lines = output.replace(/\r/g, '').split('\n');
  const verdicts = lines.map((l) => /STRATA-GUEST: (.*)$/.exec(l)?.[1]).filter((v): v is string => v !== undefined);
  const sums = new Map<string, string>();
  for (const l of lines) {
    const m = /STRATA-SUM ([0-9a-f]{64}) (.+)$/.exec(l);
    if (m) sums.set(m[2], m[1]);
  }
  return { verdict: verdicts.at(-1), sums };
}

/** The end of the console, for a failure message that shows what the guest saw. */
export function consoleTail(run: GuestRun, lines = 40): string {
  return run.console.replace(/\r/g, '').split('\n').slice(-lines).join('\n');
}
