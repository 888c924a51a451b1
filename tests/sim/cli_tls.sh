#!/bin/sh
# Runs fedc-sim --transport tls with four fedc-client processes for two
# rounds and checks that the server finished both rounds with every
# client reporting, and that every client exited cleanly.
# Usage: cli_tls.sh PATH/TO/fedc-sim PATH/TO/fedc-server PATH/TO/fedc-client
set -eu
sim=${1:?usage: cli_tls.sh FEDC_SIM FEDC_SERVER FEDC_CLIENT}
server=${2:?missing fedc-server}
client=${3:?missing fedc-client}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "SKIP: Fashion-MNIST not found"
  exit 77
fi

status=0
"$sim" --transport tls --server-bin "$server" --client-bin "$client" \
  --clients 4 --clients-per-round 4 --rounds 2 --tls-timeout 240 \
  --work-dir "$tmp/run" --metrics "$tmp/metrics.jsonl" 2>"$tmp/sim.log" ||
  status=$?
fail() {
  echo "FAIL: $*"
  cat "$tmp/sim.log"
  exit 1
}
[ "$status" -eq 0 ] || fail "fedc-sim exited $status"
[ "$(wc -l <"$tmp/metrics.jsonl")" -eq 2 ] || fail "expected 2 rounds"
[ "$(grep -c '"clients_reported": 4,' "$tmp/metrics.jsonl")" -eq 2 ] ||
  fail "a round had fewer than 4 reports"
grep -q 'clients_exited_cleanly=4 server_status=0' "$tmp/sim.log" ||
  fail "a process did not exit cleanly"
echo "PASS: fedc-sim --transport tls ran 2 rounds with 4 clients"
