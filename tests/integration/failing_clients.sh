#!/bin/sh
# Two clients whose data has 3 features join a server that trains
# logreg:784:10. Each rejects every task before downloading the model and
# reports why. The server waits a growing delay after each abandoned round
# and writes no checkpoint for them. After max_abandoned_rounds in a row it
# stops with exit status 1 instead of spinning through its rounds.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 2
mkdir -p "$it_dir/data"
awk 'BEGIN { print "a,b,c,label"; for (i = 0; i < 200; i++)
  printf "%d,%d,%d,%d\n", i % 7, i % 5, i % 3, i % 10 }' >"$it_dir/small.csv"
"$FEDC_DATA" partition --csv "$it_dir/small.csv" --clients 2 \
  --out "$it_dir/data" >"$it_dir/fedc-data.log" 2>&1 ||
  it_abort "fedc-data partition --csv failed"
metrics=$it_dir/metrics.jsonl

start_server server --rounds 20 --min-clients 2 --model logreg:784:10 \
  --retry-delay 300 --retry-delay-max 500 --max-abandoned-rounds 3 \
  --metrics "$metrics" --checkpoint-dir "$it_dir/ckpt"
started=$(date +%s%N)
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid

wait_exit "$server_pid" 60
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
it_check "server exits 1 after 3 abandoned rounds in a row (status $it_status)" \
  test "$it_status" = 1
it_check "it waited 300 + 500 ms between the rounds ($elapsed_ms ms)" \
  test "$elapsed_ms" -ge 800
it_check "the waits are logged" \
  sh -c "grep -q 'abandoned_in_row=1 delay_ms=300' '$it_dir/server.log' &&
         grep -q 'abandoned_in_row=2 delay_ms=500' '$it_dir/server.log'"
it_check "the stop names the cause" \
  grep -q 'stopping, training failed: 3 rounds in a row were abandoned' \
  "$it_dir/server.log"
it_check "metrics file has 3 lines" test "$(metrics_lines "$metrics")" = 3
for round in 1 2 3; do
  it_check "round $round is not aggregated" \
    test "$(round_field "$metrics" "$round" aggregated)" = false
  it_check "round $round has no result" \
    test "$(round_field "$metrics" "$round" clients_reported)" = 0
done
it_check "no checkpoint was written" test ! -e "$it_dir/ckpt/model.safetensors"
it_check "the server logs the clients' reason" \
  grep -q 'client reported an error client=client-0001 round=1 .*message="data has 3 features, model expects 784"' \
  "$it_dir/server.log"
it_check "the client logs the reason" \
  grep -q 'task rejected round=1 reason="data has 3 features, model expects 784"' \
  "$it_dir/client-0001.log"
it_check "the client downloaded no model" \
  sh -c "! grep -q 'training round=' '$it_dir/client-0001.log'"
for pid in $pid1 $pid2; do
  wait_exit "$pid" 30
  it_check "client pid $pid exits 0 after Goodbye (status $it_status)" \
    test "$it_status" = 0
done

it_finish
