#!/bin/sh
# fedc-server in FedBuff mode with three fedc-client daemons: clients train
# whenever they are idle, the server applies every buffer of two updates
# as one round, and the last round is evaluated before the Goodbye.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl

start_server server --rounds 4 --min-clients 3 --rounds-mode fedbuff \
  --buffer-size 2 --metrics "$metrics" \
  --test-data "$it_dir/data/test.safetensors"
for id in client-0001 client-0002 client-0003; do
  start_client "$id"
  it_pids_clients="${it_pids_clients:-} $client_pid"
done

wait_exit "$server_pid" 120
it_check "server applies 4 buffers and exits 0 (status $it_status)" \
  test "$it_status" = 0
it_check "metrics file has 4 lines" test "$(metrics_lines "$metrics")" = 4
for line in 1 2 3 4; do
  it_check "line $line is round $line" \
    test "$(json_field "$metrics" $line round)" = $line
  it_check "round $line applied 2 updates" \
    test "$(json_field "$metrics" $line clients_reported)" = 2
done
acc=$(json_field "$metrics" 4 test_accuracy)
it_check "the last round is evaluated (accuracy $acc)" \
  awk -v a="$acc" 'BEGIN { exit !(a > 0.1 && a <= 1) }'
it_check "server logged the asynchronous start" \
  grep -q "asynchronous training started" "$it_dir/server.log"
for pid in $it_pids_clients; do
  wait_exit "$pid" 30
  it_check "client pid $pid exits 0 after Goodbye (status $it_status)" \
    test "$it_status" = 0
done

it_finish
