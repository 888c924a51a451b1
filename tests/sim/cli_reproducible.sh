#!/bin/sh
# Runs fedc-sim twice with the same seed on Fashion-MNIST and checks that
# the metrics files are byte-identical, then checks the plot, the
# --wall-clock field and the exit code of a bad option.
# Usage: cli_reproducible.sh PATH/TO/fedc-sim
set -eu
sim=${1:?usage: cli_reproducible.sh PATH/TO/fedc-sim}
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -r "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: Fashion-MNIST not found in $data"
  exit 77
fi

run() {
  "$sim" --data "$data" --clients 30 --clients-per-round 6 --rounds 3 \
    --partition dirichlet --alpha 0.5 --dropout 0.2 --seed 5 "$@"
}

run --metrics "$tmp/a.jsonl" --plot "$tmp/a.svg" 2>"$tmp/a.log"
run --metrics "$tmp/b.jsonl" --workers 1 2>"$tmp/b.log"
run --metrics "$tmp/c.jsonl" --seed 6 2>"$tmp/c.log"

lines=$(wc -l <"$tmp/a.jsonl")
[ "$lines" -eq 3 ] || { echo "FAIL: expected 3 rounds, got $lines"; exit 1; }
cmp "$tmp/a.jsonl" "$tmp/b.jsonl" || { echo "FAIL: same seed, different files"; exit 1; }
if cmp -s "$tmp/a.jsonl" "$tmp/c.jsonl"; then
  echo "FAIL: another seed gave the same file"; exit 1
fi
grep -q '"simulated_seconds": ' "$tmp/a.jsonl" || { echo "FAIL: no simulated_seconds"; exit 1; }
if grep -q '"seconds": ' "$tmp/a.jsonl"; then
  echo "FAIL: real seconds in a deterministic file"; exit 1
fi
grep -q '^fedc-sim: done rounds=3 ' "$tmp/a.log" || { echo "FAIL: no summary line"; cat "$tmp/a.log"; exit 1; }
grep -q '</svg>' "$tmp/a.svg" || { echo "FAIL: no SVG plot"; exit 1; }

run --metrics "$tmp/d.jsonl" --wall-clock true 2>/dev/null
grep -q '"seconds": ' "$tmp/d.jsonl" || { echo "FAIL: --wall-clock wrote no seconds"; exit 1; }

status=0
"$sim" --clients 0 2>/dev/null || status=$?
[ "$status" -eq 2 ] || { echo "FAIL: --clients 0 exited $status, expected 2"; exit 1; }

echo "PASS: fedc-sim same seed, identical metrics"
