#!/bin/sh
# fedc-server killed with SIGKILL mid-training and started again on the
# same port: it resumes at the round after its checkpoint, sends the
# checkpoint's weights as the global model, the clients reconnect by
# themselves, and the rounds in the metrics file continue without a gap.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl
ckpt=$it_dir/ckpt/model.safetensors
checkpoint_py="/usr/bin/python3 $FEDC_SOURCE_ROOT/tests/integration/checkpoint.py"
rounds=5

start_server server1 --rounds $rounds --min-clients 2 --local-epochs 5 \
  --checkpoint-dir "$it_dir/ckpt" --metrics "$metrics" \
  --test-data "$it_dir/data/test.safetensors"
first_pid=$server_pid
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid

wait_lines "$metrics" 2 90 || it_abort "the first server never finished round 2"
kill -KILL "$first_pid"
wait_exit "$first_pid" 10
saved=$($checkpoint_py meta "$ckpt" round)
cp "$ckpt" "$it_dir/before-restart.safetensors"
lines=$(metrics_lines "$metrics")
it_log "server killed with checkpoint round $saved, metrics lines $lines"
it_check "checkpoint round $saved is at least 2" test "$saved" -ge 2
it_check "the last metrics line is the checkpoint's round" \
  test "$(json_field "$metrics" "$lines" round)" = "$saved"

# The restarted server waits for a third client, the rogue client in honest
# mode, which saves the first global model it receives.
restart_port=$server_port
start_server server2 --rounds $rounds --min-clients 3 --local-epochs 5 \
  --checkpoint-dir "$it_dir/ckpt" --metrics "$metrics" \
  --test-data "$it_dir/data/test.safetensors"
restart_port=
it_check "restarted server logs the round it resumes at" \
  grep -q "resuming at round $((saved + 1)) " "$it_dir/server2.log"
start_rogue rogue --id client-0003 --cert "$it_dir/pki/client-0003.pem" \
  --key "$it_dir/pki/client-0003.key" --mode honest \
  --dump-model "$it_dir/first-model.raw"

wait_exit "$server_pid" 120
it_check "restarted server finishes and exits 0 (status $it_status)" \
  test "$it_status" = 0
it_check "the first model sent after the restart is the checkpoint's" \
  $checkpoint_py same-data "$it_dir/before-restart.safetensors" \
  "$it_dir/first-model.raw"
it_check "the first round after the restart is round $((saved + 1))" \
  test "$(grep -Eo 'round started round=[0-9]+' "$it_dir/server2.log" |
    head -n 1 | sed 's/.*=//')" = $((saved + 1))

it_check "metrics file has $rounds lines" \
  test "$(metrics_lines "$metrics")" = $rounds
line=1
while [ $line -le $rounds ]; do
  it_check "metrics line $line is round $line" \
    test "$(json_field "$metrics" $line round)" = $line
  line=$((line + 1))
done
it_check "checkpoint ends at round $rounds" \
  test "$($checkpoint_py meta "$ckpt" round)" = $rounds

for pid in $pid1 $pid2; do
  wait_exit "$pid" 30
  it_check "client pid $pid exits 0 after Goodbye (status $it_status)" \
    test "$it_status" = 0
done
it_check "client-0001 reconnected after the server died" \
  grep -q "reconnecting in" "$it_dir/client-0001.log"
it_check "client-0001 connected twice" \
  test "$(grep -c 'client: connected server=' "$it_dir/client-0001.log")" -ge 2
wait_exit "$rogue_pid" 30
it_check "rogue client exits 0 after Goodbye (status $it_status)" \
  test "$it_status" = 0

it_finish
