#!/bin/sh
# Checks fedc-sim's handling of settings that cannot work: each is
# rejected with a message that names the problem and the fix, and a run
# that finishes no round exits non-zero. Also checks that the poisoning
# flags reach the simulation.
# Usage: cli_options.sh PATH/TO/fedc-sim
set -eu
sim=${1:?usage: cli_options.sh PATH/TO/fedc-sim}
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -r "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: Fashion-MNIST not found in $data"
  exit 77
fi

# expect STATUS PATTERN ARGS...: runs fedc-sim with ARGS and checks that it
# exits with STATUS and that its stderr matches the grep pattern PATTERN.
expect() {
  want=$1 pattern=$2
  shift 2
  status=0
  "$sim" --data "$data" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
  if [ "$status" -ne "$want" ]; then
    echo "FAIL: fedc-sim $* exited $status, expected $want"
    cat "$tmp/err"
    exit 1
  fi
  if ! grep -q -e "$pattern" "$tmp/err"; then
    echo "FAIL: fedc-sim $*: stderr does not match \"$pattern\""
    cat "$tmp/err"
    exit 1
  fi
}

# Availability under which no client is ever online, or which does nothing.
expect 2 'availability_online is 0 with availability_period 100 s' \
  --availability-period 100 --availability-online 0 --rounds 2
expect 2 'availability_online 0.5 has no effect without availability_period' \
  --availability-online 0.5
expect 2 'min_clients 20 is above clients 10' --clients 10 --min-clients 20

# A run that ends before its first round fails, and so does one in which
# every round is abandoned (a 1 ms deadline that no client meets).
expect 1 'no round finished in' --clients 10 --rounds 2 --max-time 0.5
expect 1 'all 2 rounds were abandoned without changing the model' \
  --clients 10 --rounds 2 --round-timeout 1
expect 2 'dropout must be in \[0, 1)' --dropout 1

# The plot format follows the extension, checked before the run.
expect 2 'invalid plot path .*must end in .svg, or in .png' \
  --plot "$tmp/p.jpg"
[ ! -e "$tmp/p.jpg" ] || { echo "FAIL: a .jpg plot was written"; exit 1; }
mkdir "$tmp/empty"
status=0
PATH="$tmp/empty" "$sim" --data "$data" --plot "$tmp/p.png" \
  2>"$tmp/err" || status=$?
[ "$status" -eq 2 ] || { echo "FAIL: .png without gnuplot exited $status"; exit 1; }
grep -q 'gnuplot, which draws .png plots, is not on PATH' "$tmp/err" ||
  { echo "FAIL: no gnuplot hint"; cat "$tmp/err"; exit 1; }

# More clients than rows: the counts and the --data-copies that fixes it.
expect 1 'needs 1 per client, so 100000 for 100000 clients, but there are 60000' \
  --clients 100000
grep -q 'set --data-copies 2 ' "$tmp/err" ||
  { echo "FAIL: no --data-copies hint"; cat "$tmp/err"; exit 1; }
expect 1 'set --data-copies 17 ' --clients 100000 --data-copies 2 \
  --partition dirichlet --min-rows 10

# Poisoning flags: checked, and wired to the simulation.
expect 2 'unknown attack; expected none, scale or sign_flip' --attack flip
expect 2 'attack_fraction must be in \[0, 1\]' --attack scale \
  --attack-fraction 1.5
expect 2 'attack_factor must be a finite number > 0' --attack scale \
  --attack-factor 0
expect 2 'attack works only with transport memory' --attack scale \
  --transport tls
"$sim" --help | grep -q -e '--attack-fraction (fraction)' ||
  { echo "FAIL: --help lacks --attack-fraction"; exit 1; }

# accuracy ARGS...: the final test accuracy of a short run, in per mille.
accuracy() {
  "$sim" --data "$data" --clients 10 --clients-per-round 10 --rounds 3 \
    --seed 2 "$@" 2>"$tmp/err" >/dev/null
  sed -n 's/.* accuracy=0\.\([0-9]\{3\}\).*/\1/p' "$tmp/err" | sed 's/^0*//'
}
clean=$(accuracy)
flipped=$(accuracy --attack sign_flip --attack-fraction 0.3 --attack-factor 10)
echo "clean accuracy 0.$clean, with 3 of 10 clients flipping x10 0.$flipped"
[ "${clean:-0}" -gt 700 ] || { echo "FAIL: clean run at 0.$clean"; exit 1; }
[ "${flipped:-0}" -lt 300 ] || { echo "FAIL: the attack did not take effect"; exit 1; }

echo "PASS: fedc-sim rejects impossible settings and runs attacks"
