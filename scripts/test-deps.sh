#!/usr/bin/env bash
# Makes sure the real NBD clients and tools the interop tests drive are present.
# As root it installs what is missing with apt-get; otherwise it stops and names
# the exact command to run. With CI=true every interop test needs these tools.
set -euo pipefail

# Ceph's daemons run a one-host cluster for the RADOS tests (scripts/ceph-cluster.sh); ceph-common brings librados2, ceph, rados and rbd.
packages=(qemu-utils libnbd-bin python3-libnbd nbdkit fio qemu-system-x86 busybox-static e2fsprogs file openssl ceph-mon ceph-mgr ceph-osd ceph-common uuid-runtime)
# What scripts/build-nbd-tester-client.sh needs to build the NBD project's test client.
build_packages=(git gcc make autoconf automake libtool pkg-config bison flex autoconf-archive libglib2.0-dev)
declare -A probe=(
  [qemu-utils]=qemu-img
  [libnbd-bin]=nbdinfo
  [python3-libnbd]=nbdsh
  [nbdkit]=nbdkit
  [fio]=fio
  [qemu-system-x86]=qemu-system-x86_64
  [busybox-static]=/bin/busybox
  [e2fsprogs]=/sbin/mke2fs
  [file]=file
  [openssl]=openssl
  [ceph-mon]=ceph-mon
  [ceph-mgr]=ceph-mgr
  [ceph-osd]=ceph-osd
  [ceph-common]=rados
  [uuid-runtime]=uuidgen
)

missing=()
for p in "${packages[@]}"; do
  tool=${probe[$p]}
  if [[ $tool == /* ]]; then [[ -x $tool ]] || missing+=("$p")
  else command -v "$tool" >/dev/null 2>&1 || missing+=("$p"); fi
done

# fio must have its nbd and rbd engines (Debian builds both in).
for engine in nbd rbd; do
  if command -v fio >/dev/null 2>&1 && ! fio --enghelp 2>/dev/null | grep -qw "$engine"; then
    echo "test-deps: this fio has no $engine engine; install Debian's fio package" >&2
    exit 1
  fi
done

if ! command -v nbd-tester-client >/dev/null 2>&1; then
  for p in "${build_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  build_tester=1
fi

if ((${#missing[@]} == 0)) && [[ -z ${build_tester:-} ]]; then exit 0; fi

line="apt-get install -y ${missing[*]}"
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  if ((${#missing[@]} > 0)); then apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; fi
  if [[ -n ${build_tester:-} ]]; then "$(dirname "$0")/build-nbd-tester-client.sh" >&2; fi
  exit 0
fi
echo "test-deps: the tests need: ${missing[*]}" >&2
echo "test-deps: run as root:  $line" >&2
if [[ -n ${build_tester:-} ]]; then echo "test-deps: then build the NBD test client:  scripts/build-nbd-tester-client.sh" >&2; fi
exit 1
