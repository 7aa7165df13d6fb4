import { PATTERN_LENGTH, ROUND_BYTES, ROUND_FROM_STEP, ROUND_KEEP, ROUND_STEP, type PayloadFile, type PayloadSegment } from './guest-payload.js';

/**
 * The guest's /init: a busybox shell script that reads its phase from the
 * kernel command line (strata.phase=write|verify|soak), does the work on /dev/vda
 * and ends with exactly one verdict line on the serial console,
 * `STRATA-GUEST: OK <files>` or `STRATA-GUEST: FAIL <why>`, then powers off.
 * Every payload checksum is printed as `STRATA-SUM <sha256> <name>` so the
 * host compares them with its own. The soak phase writes the payload, then
 * one round file after another (`STRATA-ROUND <n>` after each is synced)
 * until the console reads a line `stop`, so the host can move the disk or
 * the VM while the guest writes; it then checks every file again from a
 * fresh mount.
 */
export interface GuestScript {
  /** Module paths inside the initramfs, in load order. */
  modules: string[];
  files: PayloadFile[];
  /** Bytes of a throw-away file written, deleted and trimmed between the payload files. */
  junkBytes: number;
}

/** Past this many rounds without a stop line the soak phase gives up: the host is gone (a few minutes even on a loaded machine). */
const MAX_ROUNDS = 400;

/** The pattern blob's path inside the initramfs. */
export const PATTERN_PATH = '/pattern.bin';

// Fixed identities: mke2fs would otherwise wait for entropy the guest does not have.
const FS_UUID = '6b1e3a52-9c0d-4f3e-8a57-5f7a0c1d2e3f';
const HASH_SEED = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

export function initScript(opts: GuestScript): string {
  const names = opts.files.map((f) => f.name);
  const half = Math.ceil(opts.files.length / 2);
  const junk: PayloadFile = { name: '/mnt/junk', size: opts.junkBytes, segments: [{ at: 0, len: opts.junkBytes, from: 1 }] };
  const dirs = [...new Set(names.map((n) => n.split('/').slice(0, -1).join('/')).filter(Boolean))];
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "STRATA-GUEST: $*"; }
fail() { say "FAIL $*"; sync; poweroff -f; sleep 3600; }
kernel_errors() { dmesg | grep -E 'I/O error|EXT4-fs error|EXT4-fs warning|blk_update_request|critical medium'; }
# seg FILE AT LEN FROM REPEATS: the pattern from offset FROM onwards, then whole copies, LEN bytes of it at AT.
seg() {
  { tail -c +$(($4 + 1)) ${PATTERN_PATH}; i=0; while [ $i -lt $5 ]; do cat ${PATTERN_PATH}; i=$((i + 1)); done; } \\
    | dd of="$1" bs=65536 seek=$2 oflag=seek_bytes iflag=count_bytes,fullblock count=$3 conv=notrunc 2>/dev/null \\
    || fail "writing $1"
}
report_sums() {
  while read -r sum name; do echo "STRATA-SUM $sum $name"; done < /mnt/SHA256SUMS
}

${opts.modules.map((m) => `insmod ${m} || fail "insmod ${m}"`).join('\n')}
n=0
while [ ! -b /dev/vda ]; do
  n=$((n + 1)); [ $n -gt 200 ] && fail "no /dev/vda after loading virtio_blk"
  usleep 50000
done

phase=$(sed -n 's/.*strata\\.phase=\\([a-z]*\\).*/\\1/p' /proc/cmdline)
write_payload() {
  # mke2fs discards the device and zeroes the inode tables and journal itself (TRIM, WRITE_ZEROES).
  /sbin/mke2fs -q -t ext4 -F -U ${FS_UUID} -E hash_seed=${HASH_SEED},lazy_itable_init=0,lazy_journal_init=0 /dev/vda \\
    || fail "mke2fs exit $?"
  mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
  mkdir -p /mnt/data ${dirs.map((d) => `/mnt/data/${d}`).join(' ')} || fail mkdir
  cd /mnt/data || fail "cd /mnt/data"
${opts.files.slice(0, half).map(fileCommands).join('\n')}
${fileCommands(junk)}
  sync
${opts.files.slice(half).map(fileCommands).join('\n')}
  # Space freed in the middle of live data: a TRIM of the wrong range destroys a payload file.
  rm /mnt/junk && sync || fail "removing junk"
  fstrim -v /mnt || fail "fstrim exit $?"
}
# One round file (sizes and pattern offsets as roundFile() on the host computes them), the oldest kept one removed.
write_round() {
  f=rounds/r$1
  len=$((${ROUND_BYTES} + $1 * ${ROUND_STEP}))
  from=$(( ($1 * ${ROUND_FROM_STEP}) % ${PATTERN_LENGTH} ))
  reps=$(( (len - (${PATTERN_LENGTH} - from) + ${PATTERN_LENGTH} - 1) / ${PATTERN_LENGTH}))
  [ $reps -lt 0 ] && reps=0
  truncate -s $len $f || fail "truncate $f"
  seg $f 0 $len $from $reps
  rm -f rounds/r$(($1 - ${ROUND_KEEP}))
}

case "$phase" in
write)
  write_payload
  sha256sum ${names.join(' ')} > /mnt/SHA256SUMS || fail "sha256sum"
  sync
  report_sums
  cd /
  umount /mnt || fail "umount"
  kernel_errors && fail "kernel reported errors"
  say "OK ${opts.files.length}"
  ;;
soak)
  write_payload
  mkdir -p /mnt/data/rounds || fail "mkdir rounds"
  round=0
  while :; do
    round=$((round + 1))
    [ $round -gt ${MAX_ROUNDS} ] && fail "no stop line on the console after ${MAX_ROUNDS} rounds"
    write_round $round
    sync
    echo "STRATA-ROUND $round"
    line=
    read -t 0.2 line
    [ "$line" = stop ] && break
  done
  fstrim /mnt || fail "fstrim after the rounds exit $?"
  sha256sum ${names.join(' ')} rounds/* > /mnt/SHA256SUMS || fail "sha256sum"
  sync
  report_sums
  echo "STRATA-ROUNDS $round"
  cd /
  umount /mnt || fail "umount"
  # Nothing of the files stays cached: the check below reads what the disk holds now.
  echo 3 > /proc/sys/vm/drop_caches
  mount -t ext4 -o ro /dev/vda /mnt || fail "mount -o ro /dev/vda after the rounds"
  cd /mnt/data || fail "cd /mnt/data"
  sha256sum -c /mnt/SHA256SUMS > /tmp/check 2>&1 || { grep -v ': OK$' /tmp/check | head -5; fail "checksum mismatch"; }
  listed=$(wc -l < /mnt/SHA256SUMS)
  cd /
  umount /mnt || fail "umount"
  kernel_errors && fail "kernel reported errors"
  say "OK $listed"
  ;;
verify)
  /sbin/e2fsck -fn /dev/vda > /tmp/fsck 2>&1
  rc=$?
  [ $rc = 0 ] || { cat /tmp/fsck; fail "e2fsck -fn exit $rc"; }
  mount -t ext4 -o ro /dev/vda /mnt || fail "mount -o ro /dev/vda"
  cd /mnt/data || fail "cd /mnt/data"
  sha256sum -c /mnt/SHA256SUMS > /tmp/check 2>&1 || { grep -v ': OK$' /tmp/check | head -5; fail "checksum mismatch"; }
  report_sums
  listed=$(wc -l < /mnt/SHA256SUMS)
  cd /
  umount /mnt || fail "umount"
  kernel_errors && fail "kernel reported errors"
  say "OK $listed"
  ;;
*)
  fail "unknown phase '$phase'"
  ;;
esac
poweroff -f
sleep 3600
`;
}

/** Shell lines that create one payload file: set its size (holes), then write its segments. */
function fileCommands(file: PayloadFile): string {
  const lines = [`  rm -f ${file.name}; truncate -s ${file.size} ${file.name} || fail "truncate ${file.name}"`];
  for (const s of file.segments) lines.push(`  seg ${file.name} ${s.at} ${s.len} ${s.from} ${repeats(s)}`);
  return lines.join('\n');
}

/** Whole pattern copies needed after the first partial one to cover the segment. */
function repeats(s: PayloadSegment): number {
  return Math.max(0, Math.ceil((s.len - (PATTERN_LENGTH - s.from)) / PATTERN_LENGTH));
}
