#!/bin/sh
# An external trainer that fails in a different way each round, beside two
# clients with the built-in trainer: a non-zero exit, a NaN update, a
# timeout, no update file. Each time the client reports a training failure
# and stays connected. The server counts it (the round's clients_lost, the
# Error counter) and closes the round with the other two updates. In the
# last rounds the same client's trainer works again and reports.
. "$(dirname "$0")/lib.sh"

# wait_for_file PATH SECONDS: waits until PATH exists.
wait_for_file() {
  deadline=$(($(date +%s) + $2))
  while [ ! -e "$1" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 20
metrics=$it_dir/metrics.jsonl
rounds=6
# Seconds the trainer may run: round 3 takes this long, and the test has
# this long to read /metrics in round 5.
timeout=5

# The trainer reads the round from task.json. From round 5 on it returns
# the global model unchanged, which is a valid update. In round 5 it first
# waits for the test to create ../release, so that the server is still up
# when the test reads /metrics.
cat >"$it_dir/flaky-trainer.sh" <<'EOF'
#!/bin/sh
round=$(sed -n 's/^ *"round": \([0-9]*\),$/\1/p' task.json)
write_metrics() {
  printf '{"loss": 1.5, "accuracy": 0.25, "examples": 100, "steps": 4}' >metrics.json
}
case $round in
1)
  echo "flaky trainer: failing on purpose"
  exit 3 ;;
2)
  # Same header, every float 0xffffffff, which is a NaN.
  header=$(od -An -t u8 -N 8 model.safetensors | tr -d ' ')
  size=$(wc -c <model.safetensors)
  head -c $((8 + header)) model.safetensors >update.safetensors
  head -c $((size - 8 - header)) /dev/zero | tr '\0' '\377' >>update.safetensors
  write_metrics ;;
3)
  sleep 60 ;;
4)
  write_metrics ;;
*)
  if [ "$round" = 5 ]; then
    touch ../round-5-started
    while [ ! -e ../release ]; do sleep 0.05; done
  fi
  cp model.safetensors update.safetensors
  write_metrics ;;
esac
EOF
chmod +x "$it_dir/flaky-trainer.sh"

start_server server --rounds $rounds --min-clients 3 --quorum 0.5 \
  --local-epochs 1 --test-data "$it_dir/data/test.safetensors" \
  --metrics "$metrics" --metrics-listen 127.0.0.1:0
http_port=$(metrics_port "$it_dir/server.log")
start_client client-0001
pid_1=$client_pid
start_client client-0002
pid_2=$client_pid
start_client client-0003 --trainer exec \
  --trainer-command "$it_dir/flaky-trainer.sh" --trainer-timeout $timeout \
  --work-dir "$it_dir/work"
pid_3=$client_pid

# Read /metrics while the trainer keeps round 5 open.
wait_for_log "$it_dir/server.log" 'round finished round=4 ' 120 ||
  it_abort "round 4 never finished"
wait_for_file "$it_dir/round-5-started" 30 ||
  it_abort "the trainer never started round 5"
scrape "$http_port" >"$it_dir/scrape.txt" 2>&1
touch "$it_dir/release"
it_check "/metrics counts the 4 client errors" \
  grep -q '^fedc_server_client_errors_total 4$' "$it_dir/scrape.txt"

wait_exit "$server_pid" 120
it_check "server exits 0 after the last round (status $it_status)" \
  test "$it_status" = 0
for n in 1 2 3; do
  eval "pid=\$pid_$n"
  wait_exit "$pid" 30
  it_check "client-000$n exits 0 after Goodbye (status $it_status)" \
    test "$it_status" = 0
done

it_check "metrics file has $rounds lines" \
  test "$(metrics_lines "$metrics")" = $rounds
for round in 1 2 3 4; do
  it_check "round $round: 3 clients sampled" \
    test "$(round_field "$metrics" $round clients_sampled)" = 3
  it_check "round $round: 2 clients reported" \
    test "$(round_field "$metrics" $round clients_reported)" = 2
  it_check "round $round: the failed client counts as lost" \
    test "$(round_field "$metrics" $round clients_lost)" = 1
  it_check "round $round: aggregated with the other two" \
    test "$(round_field "$metrics" $round aggregated)" = true
done
for round in 5 6; do
  it_check "round $round: all 3 clients reported" \
    test "$(round_field "$metrics" $round clients_reported)" = 3
done

# server_error ROUND TEXT: the server logged client-0003's Error of ROUND.
server_error() {
  grep -q "client reported an error client=client-0003 round=$1 code=9 message=\"training failed: $2\"" \
    "$it_dir/server.log"
}
it_check "server logged the exit status failure" server_error 1 "child process failed"
it_check "server logged the NaN failure" server_error 2 "NaN or Inf value"
it_check "server logged the timeout" server_error 3 "timed out"
it_check "server logged the missing update" server_error 4 "malformed input"

log3=$it_dir/client-0003.log
it_check "client logged the exit status" grep -q "trainer failed (exit status 3)" "$log3"
it_check "client logged the NaN rejection" grep -q "rejected update: NaN or Inf values" "$log3"
it_check "client logged the kill at the timeout" grep -q "trainer killed after ${timeout}000 ms" "$log3"
it_check "client logged the missing update" grep -q "trainer wrote no $it_dir/work/update.safetensors" "$log3"
it_check "client reported 4 failed trainings" \
  test "$(grep -c 'local training failed round=' "$log3")" = 4
it_check "client trained rounds 5 and 6" \
  test "$(grep -c 'local training done round=' "$log3")" = 2
it_check "client stayed on its first connection" \
  test "$(grep -c 'connected server=' "$log3")" = 1
it_check "client never reconnected" sh -c "! grep -q reconnecting '$log3'"

it_finish
