#!/usr/bin/env bash
# A throwaway one-host Ceph cluster for Strata's tests and benchmarks: one
# monitor, one manager and N OSDs (BlueStore on sparse files), all on
# 127.0.0.1, run as plain processes under DIR (no systemd, no containers).
#
#   scripts/ceph-cluster.sh start DIR [OSDS]   # prints DIR/ceph.conf when healthy
#   scripts/ceph-cluster.sh stop DIR           # stops every daemon, removes DIR
#   scripts/ceph-cluster.sh osd-stop DIR ID | osd-start DIR ID
#   scripts/ceph-cluster.sh osd-freeze DIR ID | osd-thaw DIR ID   # SIGSTOP / SIGCONT: an OSD that hangs
#
# The cluster has pool 'strata' (replicas: 2 when there are 2+ OSDs) and pool
# 'rbd' for the RBD comparison; client.admin's keyring is DIR/keyring, named
# by DIR/ceph.conf, so `ceph -c DIR/ceph.conf` and librados find it.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start|stop|osd-stop|osd-start|osd-freeze|osd-thaw DIR [N]" >&2; exit 2; }
conf="$dir/ceph.conf"

ceph_() { timeout 60 ceph -c "$conf" "$@"; }

start_osd() {
  local id=$1
  ceph-osd -c "$conf" -i "$id" >>"$dir/log/osd.$id.out" 2>&1
}

# Waits until OSD `id` is up in the map (or fails naming its log).
wait_osd_up() {
  local id=$1
  for _ in $(seq 1 120); do
    if ceph_ osd dump --format json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if any(o['osd']==$id and o['up']==1 for o in d['osds']) else 1)"; then return 0; fi
    sleep 0.5
  done
  echo "ceph-cluster: osd.$id did not come up; see $dir/log/osd.$id.log" >&2
  return 1
}

case $cmd in
start)
  osds=${3:-3}
  for tool in ceph-mon ceph-mgr ceph-osd ceph monmaptool ceph-authtool uuidgen python3; do
    command -v "$tool" >/dev/null || { echo "ceph-cluster: $tool is missing (apt-get install -y ceph-mon ceph-mgr ceph-osd ceph-common uuid-runtime)" >&2; exit 1; }
  done
  [[ ! -e $dir ]] || { echo "ceph-cluster: $dir already exists" >&2; exit 1; }
  mkdir -p "$dir"/{run,log,mon/ceph-a,mgr/ceph-x}
  fsid=$(uuidgen)
  # Ports are picked per cluster so that two test runs on one machine do not meet.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  replicas=$(( osds >= 2 ? 2 : 1 ))
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = v1:127.0.0.1:$port
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr2 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.\$pid.asok
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = true
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd pool default size = $replicas
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# One host stands for many: each OSD is its own failure domain for the
# reports that mark a silent peer down too. With Ceph's default (reports
# from 2 different hosts) an OSD that hangs is never marked down here, and
# I/O to its placement groups waits until it wakes (or 15 minutes).
mon osd reporter subtree level = osd
# A hung OSD is marked down within about 10 s instead of about 30.
osd heartbeat interval = 1
osd heartbeat grace = 8
[mon]
mon data = $dir/mon/\$cluster-\$id
keyring = $dir/mon/\$cluster-\$id/keyring
[mgr]
mgr data = $dir/mgr/\$cluster-\$id
keyring = $dir/mgr/\$cluster-\$id/keyring
[osd]
osd data = $dir/osd/\$cluster-\$id
keyring = $dir/osd/\$cluster-\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
osd op num shards = 2
osd op num threads per shard = 1
osd max object name len = 256
osd max object namespace len = 64
EOF
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
  monmaptool --create --addv a "[v1:127.0.0.1:$port]" --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" >"$dir/log/mon.mkfs.out" 2>&1
  ceph-mon -c "$conf" -i a >>"$dir/log/mon.a.out" 2>&1
  ceph_ auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$dir/mgr/ceph-x/keyring" >/dev/null
  ceph-mgr -c "$conf" -i x >>"$dir/log/mgr.x.out" 2>&1
  # The OSDs are made side by side: mkfs is most of the start-up time.
  pids=()
  for _ in $(seq 1 "$osds"); do
    uuid=$(uuidgen)
    id=$(ceph_ osd new "$uuid")
    mkdir -p "$dir/osd/ceph-$id"
    ceph_ auth get-or-create "osd.$id" mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' -o "$dir/osd/ceph-$id/keyring" >/dev/null
    (ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" >"$dir/log/osd.$id.mkfs.out" 2>&1 && start_osd "$id") &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "ceph-cluster: an OSD failed to start; see $dir/log" >&2; exit 1; }; done
  for id in $(seq 0 $((osds - 1))); do wait_osd_up "$id"; done
  ceph_ osd pool create strata 32 32 >/dev/null 2>&1
  ceph_ osd pool application enable strata strata >/dev/null 2>&1
  ceph_ osd pool create rbd 32 32 >/dev/null 2>&1
  ceph_ osd pool application enable rbd rbd >/dev/null 2>&1
  # Ready when every placement group is active: before that, I/O to it waits.
  for _ in $(seq 1 240); do
    if ceph_ pg stat --format json 2>/dev/null | python3 -c "
import json,sys
d=json.load(sys.stdin); s=d.get('pg_summary', d)
n=s.get('num_pgs',0); act=sum(x['num'] for x in s.get('num_pg_by_state',[]) if 'active' in x['name'])
sys.exit(0 if n>0 and act==n else 1)"; then echo "$conf"; exit 0; fi
    sleep 0.5
  done
  echo "ceph-cluster: placement groups did not become active; see $dir/log" >&2
  exit 1
  ;;
stop)
  [[ -d $dir ]] || exit 0
  # Every daemon of this cluster names its conf on its command line.
  pkill -f -- "-c $conf" 2>/dev/null || true
  for _ in $(seq 1 50); do pgrep -f -- "-c $conf" >/dev/null || break; sleep 0.2; done
  pkill -9 -f -- "-c $conf" 2>/dev/null || true
  rm -rf "$dir"
  ;;
osd-stop)
  id=${3:?osd id}
  pkill -f -- "ceph-osd -c $conf -i $id\$" || true
  for _ in $(seq 1 100); do pgrep -f -- "ceph-osd -c $conf -i $id\$" >/dev/null || exit 0; sleep 0.1; done
  pkill -9 -f -- "ceph-osd -c $conf -i $id\$" || true
  ;;
osd-start)
  id=${3:?osd id}
  start_osd "$id"
  wait_osd_up "$id"
  ;;
osd-freeze)
  id=${3:?osd id}
  pkill -STOP -f -- "ceph-osd -c $conf -i $id\$"
  ;;
osd-thaw)
  id=${3:?osd id}
  pkill -CONT -f -- "ceph-osd -c $conf -i $id\$"
  # Marked down while it hung, it has itself marked up again.
  wait_osd_up "$id"
  ;;
*)
  echo "usage: $0 start|stop|osd-stop|osd-start|osd-freeze|osd-thaw DIR [N]" >&2
  exit 2
  ;;
esac
