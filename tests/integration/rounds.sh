#!/bin/sh
# fedc-server and three fedc-client daemons train logistic regression on
# Fashion-MNIST for three rounds over mutual TLS on loopback. Checks the
# per-round metrics file, the Prometheus endpoint, the checkpoint, the
# clean exits, SIGHUP and SIGTERM, and that a client whose id differs from
# its certificate's CN refuses to start.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl

start_server server --rounds 3 --min-clients 3 --quorum 1 \
  --test-data "$it_dir/data/test.safetensors" --metrics "$metrics" \
  --checkpoint-dir "$it_dir/ckpt" --metrics-listen 127.0.0.1:0 \
  --learning-rate 0.05 --batch-size 32
http_port=$(metrics_port "$it_dir/server.log")
for id in client-0001 client-0002 client-0003; do
  start_client "$id"
  eval "pid_$(echo "$id" | tr - _)=\$client_pid"
done

wait_exit "$server_pid" 120
it_check "server exits 0 after the last round (status $it_status)" \
  test "$it_status" = 0
for id in client-0001 client-0002 client-0003; do
  eval "pid=\$pid_$(echo "$id" | tr - _)"
  wait_exit "$pid" 30
  it_check "$id exits 0 after Goodbye (status $it_status)" test "$it_status" = 0
  it_check "$id logged the Goodbye" grep -q "all rounds finished" "$it_dir/$id.log"
done

it_check "metrics file has 3 lines" test "$(metrics_lines "$metrics")" = 3
for line in 1 2 3; do
  it_check "line $line is round $line" \
    test "$(json_field "$metrics" $line round)" = "$line"
  it_check "round $line: 3 clients sampled" \
    test "$(json_field "$metrics" $line clients_sampled)" = 3
  it_check "round $line: 3 clients reported" \
    test "$(json_field "$metrics" $line clients_reported)" = 3
  it_check "round $line: aggregated" \
    test "$(json_field "$metrics" $line aggregated)" = true
  acc=$(json_field "$metrics" $line test_accuracy)
  it_check "round $line: test accuracy $acc is in (0.1, 1]" \
    awk -v a="$acc" 'BEGIN { exit !(a > 0.1 && a <= 1) }'
  sent=$(json_field "$metrics" $line bytes_sent)
  received=$(json_field "$metrics" $line bytes_received)
  it_check "round $line: bytes sent $sent and received $received are > 0" \
    test "$sent" -gt 0 -a "$received" -gt 0
done
acc1=$(json_field "$metrics" 1 test_accuracy)
acc3=$(json_field "$metrics" 3 test_accuracy)
it_check "test accuracy rises from round 1 ($acc1) to round 3 ($acc3)" \
  float_lt "$acc1" "$acc3"

ckpt=$it_dir/ckpt/model.safetensors
it_check "checkpoint is at round 3" \
  test "$(/usr/bin/python3 "$FEDC_SOURCE_ROOT/tests/integration/checkpoint.py" meta "$ckpt" round)" = 3
it_check "checkpoint names the model" \
  test "$(/usr/bin/python3 "$FEDC_SOURCE_ROOT/tests/integration/checkpoint.py" meta "$ckpt" model_spec)" = logreg:784:10
it_check "server logged the Prometheus port" test -n "$http_port"

# A second server serves /metrics while it waits for clients, reloads its
# certificates on SIGHUP and sends Goodbye on SIGTERM.
start_server idle --rounds 1 --min-clients 2 --metrics-listen 127.0.0.1:0
http_port=$(metrics_port "$it_dir/idle.log")
scrape "$http_port" >"$it_dir/scrape.txt" 2>&1
it_check "/metrics has the round gauge" \
  grep -q '^fedc_server_round 0' "$it_dir/scrape.txt"
it_check "/metrics has the connection counter" \
  grep -q '^fedc_server_connections_total ' "$it_dir/scrape.txt"
it_check "other paths get 404" \
  test "$(scrape "$http_port" /other)" = "HTTP 404"

# The example configurations in deploy/ parse: --help runs after the file.
parses() {
  "$1" --config "$2" --help >/dev/null
}
it_check "deploy/server.ini parses" \
  parses "$FEDC_SERVER" "$FEDC_SOURCE_ROOT/deploy/server.ini"
it_check "deploy/client.ini parses" \
  parses "$FEDC_CLIENT" "$FEDC_SOURCE_ROOT/deploy/client.ini"

# The id must be the certificate's CN.
"$FEDC_CLIENT" --server 127.0.0.1 --port "$server_port" --id client-0002 \
  --cert "$it_dir/pki/client-0001.pem" --key "$it_dir/pki/client-0001.key" \
  --ca "$it_dir/pki/ca.pem" --data "$it_dir/data/client-0001.safetensors" \
  >"$it_dir/mismatch.log" 2>&1
status=$?
it_check "client with id other than its CN exits 1 (status $status)" \
  test "$status" = 1
it_check "client names the CN in its error" \
  grep -q "does not match the CN client-0001" "$it_dir/mismatch.log"

kill -HUP "$server_pid"
wait_for_log "$it_dir/idle.log" 'reloaded certificates' 10
it_check "idle server reloads its certificates on SIGHUP" test $? = 0
start_rogue after-reload --id client-0001 --cert "$it_dir/pki/client-0001.pem" \
  --key "$it_dir/pki/client-0001.key" --mode honest
wait_for_log "$it_dir/idle.log" 'client connected .*client=client-0001' 10
it_check "a client connects after the reload" test $? = 0

kill -TERM "$server_pid"
wait_exit "$server_pid" 30
it_check "idle server exits 0 on SIGTERM (status $it_status)" \
  test "$it_status" = 0
wait_exit "$rogue_pid" 10
it_check "its client gets Goodbye and exits 0 (status $it_status)" \
  test "$it_status" = 0

it_finish
