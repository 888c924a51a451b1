#!/bin/sh
# Runs one epoch of the MLP and of the CNN on Fashion-MNIST in fedc and in
# PyTorch, one process each, so that each peak RSS is its own. Prints them
# side by side with the fedc/torch ratios of wall and CPU time.
#
#   bench/trainer/run.sh [BUILD_DIR] [THREADS]
#
# BUILD_DIR is a release build (default build-release), THREADS the thread
# count of both sides: fedc's OpenBLAS and layer workers, torch's
# set_num_threads and its OpenBLAS (default 1). The first lines give the
# CPU, the load average before the run and the kernels each side uses.
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

# Prints $1 / $2 with two decimals.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), threads: $threads"
printf '%-20s %7s %7s %5s %7s %7s %5s %8s %9s %7s %7s\n' model fedc_s \
  torch_s ratio fedc_cpu torch_cpu ratio fedc_MiB torch_MiB fedc_acc \
  torch_acc
for spec in mlp:784:256:128:10 cnn; do
  text=$("$bin" --print-spec "$spec")
  ours=$("$bin" "$spec" --threads "$threads")
  theirs=$("$python" bench/trainer/bench_torch.py "$text" --threads "$threads")
  a=$(field "$ours" epoch_seconds)
  b=$(field "$theirs" epoch_seconds)
  ac=$(field "$ours" epoch_cpu_seconds)
  bc=$(field "$theirs" epoch_cpu_seconds)
  printf '%-20s %7s %7s %5s %7s %7s %5s %8s %9s %7s %7s\n' "$spec" "$a" \
    "$b" "$(ratio "$a" "$b")" "$ac" "$bc" "$(ratio "$ac" "$bc")" \
    "$(field "$ours" peak_rss_mib)" "$(field "$theirs" peak_rss_mib)" \
    "$(field "$ours" test_accuracy)" "$(field "$theirs" test_accuracy)"
done
echo "fedc: blas=$(field "$ours" blas) conv=$(field "$ours" conv_kernels);" \
  "torch: blas=$(field "$theirs" blas) conv=$(field "$theirs" conv)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
