#!/bin/sh
# Measures fedc-sim against the simulator's targets and prints one line of
# key=value results per benchmark, for docs/benchmarks.md:
#
#   scale     100,000 registered clients, 100 sampled per round, softmax
#             regression on Fashion-MNIST: peak RSS and the shares of a
#             round's real time spent waiting for local training, for the
#             test-set evaluation, and on everything else, with 60 and
#             600 rows per client, evaluating every round and every
#             10th round.
#   accuracy  100 clients, 10 per round, Dirichlet(0.5) label skew, the
#             MLP, 200 rounds: test accuracy.
#   tls       --transport tls with 200 fedc-client processes, 5 rounds.
#
# Usage: bench/sim/run.sh [BUILD_DIR] [scale|accuracy|tls]...
# BUILD_DIR defaults to build-bench, configured here as a release build
# without sanitizers; no names runs all three. Logs and metrics go to
# $OUT (default $TMPDIR/fedc-bench-sim).
set -eu
cd "$(dirname "$0")/../.."

build=${1:-build-bench}
[ $# -gt 0 ] && shift
out=${OUT:-${TMPDIR:-/tmp}/fedc-bench-sim}
mkdir -p "$out"

if [ ! -d "$build" ]; then
  meson setup "$build" -Dbuildtype=release -Dsanitize=false -Dtests=false \
    >/dev/null
fi
ninja -C "$build" sim/fedc-sim server/fedc-server client/fedc-client \
  >/dev/null
sim=$build/sim/fedc-sim

# field NAME LINE: the value of NAME=VALUE in a summary line.
field() {
  printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# scale NAME COPIES EPOCHS BATCH [ARGS]: 100,000 clients over COPIES copies
# of the 60,000 training rows (60,000 x COPIES / 100,000 rows per client).
# A round's real time splits into the event loop's waits for local
# training and for the test-set evaluation, and everything else it does
# (other): the engines, messages, checks, aggregation and bookkeeping.
scale() {
  name=$1 copies=$2 epochs=$3 batch=$4
  shift 4
  "$sim" --clients 100000 --clients-per-round 100 --rounds 30 \
    --model logreg:784:10 --partition iid --data-copies "$copies" \
    --local-epochs "$epochs" --batch-size "$batch" --learning-rate 0.05 \
    --seed 1 --wall-clock true --metrics "$out/$name.jsonl" "$@" \
    2>"$out/$name.log"
  line=$(grep '^fedc-sim: done' "$out/$name.log")
  awk -v name="$name" -v rows=$((600 * copies / 1000)) -v epochs="$epochs" \
      -v round="$(field round_seconds "$line")" \
      -v wait="$(field round_wait_seconds "$line")" \
      -v eval_wait="$(field eval_wait_seconds "$line")" \
      -v last="$(field last_round_seconds "$line")" \
      -v last_wait="$(field last_round_wait_seconds "$line")" \
      -v startup="$(field startup_seconds "$line")" \
      -v rss="$(field peak_rss_kib "$line")" \
      -v acc="$(field accuracy "$line")" 'BEGIN {
    train = wait - eval_wait
    other = round - wait
    printf "%s rows_per_client=%s local_epochs=%s rounds=30 " \
           "round_ms=%.1f train_wait_ms=%.1f eval_wait_ms=%.1f " \
           "other_ms=%.2f train_share=%.3f eval_share=%.3f " \
           "other_share=%.3f last_round_other_ms=%.1f startup_s=%.2f " \
           "peak_rss_mib=%.0f accuracy=%s\n",
           name, rows, epochs, round / 30 * 1000, train / 30 * 1000,
           eval_wait / 30 * 1000, other / 30 * 1000, train / round,
           eval_wait / round, other / round, (last - last_wait) * 1000,
           startup, rss / 1024, acc
  }'
}

bench_scale() {
  scale scale_60_rows 100 5 10
  scale scale_600_rows 1000 1 32
  scale scale_60_rows_eval_10 100 5 10 --evaluate-every 10
  scale scale_600_rows_eval_10 1000 1 32 --evaluate-every 10
}

bench_accuracy() {
  "$sim" --clients 100 --clients-per-round 10 --rounds 200 \
    --partition dirichlet --alpha 0.5 --model mlp:784:200:200:10 \
    --local-epochs 5 --batch-size 10 --learning-rate 0.02 --seed 1 \
    --wall-clock true --metrics "$out/accuracy.jsonl" \
    --plot "$out/accuracy.svg" 2>"$out/accuracy.log"
  line=$(grep '^fedc-sim: done' "$out/accuracy.log")
  best=$(sed -E 's/.*"test_accuracy": ([0-9.]+).*/\1/' "$out/accuracy.jsonl" |
    sort -n | tail -n 1)
  last10=$(tail -n 10 "$out/accuracy.jsonl" |
    sed -E 's/.*"test_accuracy": ([0-9.]+).*/\1/' |
    awk '{ s += $1 } END { printf "%.4f", s / NR }')
  echo "accuracy rounds=$(field rounds "$line") final=$(field accuracy "$line") best=$best mean_last_10=$last10 real_s=$(field real_seconds "$line") simulated_s=$(field simulated_seconds "$line")"
}

bench_tls() {
  /usr/bin/time -f 'max_rss_kib=%M' -o "$out/tls.time" \
    "$sim" --transport tls --clients 200 --clients-per-round 20 --rounds 5 \
    --model logreg:784:10 --partition dirichlet --alpha 0.5 --seed 1 \
    --tls-timeout 1200 --metrics "$out/tls.jsonl" 2>"$out/tls.log" || true
  line=$(grep '^fedc-sim: done' "$out/tls.log")
  echo "tls clients=$(field clients "$line") rounds=$(field rounds "$line") accuracy=$(field accuracy "$line") real_s=$(field real_seconds "$line") clean_exits=$(field clients_exited_cleanly "$line") server_status=$(field server_status "$line")"
}

[ $# -gt 0 ] || set -- scale accuracy tls
for b in "$@"; do
  case $b in
  scale) bench_scale ;;
  accuracy) bench_accuracy ;;
  tls) bench_tls ;;
  *) echo "unknown benchmark '$b': expected scale, accuracy or tls" >&2; exit 2 ;;
  esac
done
