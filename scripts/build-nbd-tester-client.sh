#!/usr/bin/env bash
# Builds nbd-tester-client, the NBD project's own test client (tests/run in
# NetworkBlockDevice/nbd; no distribution packages it), and installs it as
# DEST (default /usr/local/bin/nbd-tester-client). Needs git, a C compiler,
# autoconf, automake, libtool, pkg-config, bison, flex, autoconf-archive and
# GLib's headers (libglib2.0-dev); about 30 s. Built without TLS and netlink.
set -euo pipefail

dest=${1:-/usr/local/bin/nbd-tester-client}
# The commit the tests were written against; the client's options and output are stable across releases.
repo=${NBD_REPO:-https://github.com/NetworkBlockDevice/nbd.git}
commit=${NBD_COMMIT:-89ba7b5}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -d ${NBD_SRC:-} ]]; then
  cp -a "$NBD_SRC"/. "$work"
else
  git clone -q "$repo" "$work"
  git -C "$work" checkout -q "$commit"
fi
cd "$work"
./autogen.sh >/dev/null 2>&1
./configure -q --disable-manpages --without-gnutls --without-libnl >/dev/null
make -s -C tests/run nbd-tester-client >/dev/null
install -D -m 0755 tests/run/nbd-tester-client "$dest"
echo "installed $dest"
