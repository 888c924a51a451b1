#!/bin/sh
# Runs one epoch of the MLP and of the CNN on Fashion-MNIST in fedc and in
# PyTorch, one process each (so each peak RSS is its own), and prints them
# side by side with the fedc/torch time ratio.
#
#   bench/trainer/run.sh [BUILD_DIR] [THREADS]
#
# BUILD_DIR is a release build (default build-release), THREADS the
# OpenBLAS and torch thread count (default 1).
set -eu
cd "$(dirname "$0")/../.."
build=${1:-build-release}
threads=${2:-1}
bin=$build/bench/trainer/fedc-bench-trainer
python=/usr/bin/python3

# Prints the value of key $2 in the key=value line $1.
field() {
  printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

printf '%-20s %8s %8s %6s %9s %9s %7s %7s\n' model fedc_s torch_s ratio \
  fedc_MiB torch_MiB fedc_acc torch_acc
for spec in mlp:784:256:128:10 cnn; do
  text=$("$bin" --print-spec "$spec")
  ours=$("$bin" "$spec" --threads "$threads")
  theirs=$("$python" bench/trainer/bench_torch.py "$text" --threads "$threads")
  a=$(field "$ours" epoch_seconds)
  b=$(field "$theirs" epoch_seconds)
  printf '%-20s %8s %8s %6s %9s %9s %7s %7s\n' "$spec" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')" \
    "$(field "$ours" peak_rss_mib)" \
    "$(field "$theirs" peak_rss_mib)" "$(field "$ours" test_accuracy)" \
    "$(field "$theirs" test_accuracy)"
done
