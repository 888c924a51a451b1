#!/bin/sh
# SIGTERM in the middle of a round drains the server. It takes no new
# clients or rounds, but the open round still closes, is evaluated and
# checkpointed, and only then do the clients get a Goodbye. The server
# exits 0. After a restart from that checkpoint, a second SIGTERM during
# the drain drops the open round and stops at once.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl
ckpt=$it_dir/ckpt/model.safetensors
checkpoint_py="/usr/bin/python3 $FEDC_SOURCE_ROOT/tests/integration/checkpoint.py"

# 40 local epochs keep round 1 open for about a second, so the signal
# finds it open: with 2, the round could close before the signal is sent.
start_server server1 --rounds 5 --min-clients 2 --quorum 1 --local-epochs 40 \
  --round-timeout 120000 --drain-timeout 60000 --metrics "$metrics" \
  --checkpoint-dir "$it_dir/ckpt" --test-data "$it_dir/data/test.safetensors"
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid

wait_for_log "$it_dir/server1.log" 'round started round=1 ' 60 ||
  it_abort "round 1 never started"
kill -TERM "$server_pid"
wait_exit "$server_pid" 120
it_check "server exits 0 after draining (status $it_status)" \
  test "$it_status" = 0
it_check "the drain is logged" \
  grep -q 'received Terminated, draining' "$it_dir/server1.log"
it_check "the signal came while round 1 was open" \
  grep -q 'draining round=1 phase=open' "$it_dir/server1.log"
it_check "round 1 was not dropped" \
  sh -c "! grep -q 'round dropped for shutdown' '$it_dir/server1.log'"
it_check "metrics file has 1 line" test "$(metrics_lines "$metrics")" = 1
it_check "round 1 aggregated both results" \
  test "$(round_field "$metrics" 1 aggregated)" = true -a \
  "$(round_field "$metrics" 1 clients_reported)" = 2
it_check "round 1 was evaluated" \
  test "$(round_field "$metrics" 1 test_accuracy)" != null
it_check "the checkpoint holds round 1" \
  test "$($checkpoint_py meta "$ckpt" round)" = 1
it_check "no round 2 started" \
  sh -c "! grep -q 'round started round=2' '$it_dir/server1.log'"
it_check "the Goodbye came after the checkpoint" \
  awk '/checkpoint written round=1/ { c = NR } /stopping: server shutting down/ { s = NR }
       END { exit !(c > 0 && s > c) }' "$it_dir/server1.log"
for id in client-0001 client-0002; do
  eval "pid=\$pid$(echo "$id" | sed 's/client-000//')"
  wait_exit "$pid" 30
  it_check "$id exits 0 after Goodbye (status $it_status)" \
    test "$it_status" = 0
  it_check "$id trained round 1 to the end" \
    grep -q 'local training done round=1' "$it_dir/$id.log"
  it_check "$id was told the server is shutting down" \
    grep -q 'server shutting down' "$it_dir/$id.log"
done

# --- A second SIGTERM stops at once ----------------------------------------

# Long local training keeps round 2 open until the second signal arrives;
# with 2 epochs the round could close between the two signals.
restart_port=$server_port
start_server server2 --rounds 5 --min-clients 2 --quorum 1 --local-epochs 200 \
  --round-timeout 120000 --drain-timeout 60000 --metrics "$metrics" \
  --checkpoint-dir "$it_dir/ckpt" --test-data "$it_dir/data/test.safetensors"
start_client client-0001
start_client client-0002
wait_for_log "$it_dir/server2.log" 'round started round=2 ' 60 ||
  it_abort "round 2 never started after the restart"
kill -TERM "$server_pid"
wait_for_log "$it_dir/server2.log" 'draining' 10
kill -TERM "$server_pid"
wait_exit "$server_pid" 30
it_check "server exits 0 after the second signal (status $it_status)" \
  test "$it_status" = 0
it_check "the second signal drops round 2" \
  sh -c "grep -q 'dropping the open round' '$it_dir/server2.log' &&
         grep -q 'round dropped for shutdown round=2' '$it_dir/server2.log'"
it_check "metrics file still has 1 line" test "$(metrics_lines "$metrics")" = 1
it_check "the checkpoint still holds round 1" \
  test "$($checkpoint_py meta "$ckpt" round)" = 1

it_finish
