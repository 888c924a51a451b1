#!/bin/sh
# A client with a valid certificate sends an update whose every value is
# 3.0e38: finite, but enough to ruin the model for good. With the default
# max_update_norm the server rejects it (reason update_norm) and the round
# aggregates the two honest clients. With the bound off, the round is
# aggregated, its test loss is not finite, and the server rolls it back.
# No checkpoint of the ruined model is written, the honest clients keep
# training the old model, and a run in which no round was kept exits 1.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 4
make_data "$it_dir/data" 10
checkpoint_py="/usr/bin/python3 $FEDC_SOURCE_ROOT/tests/integration/checkpoint.py"

# --- The default bound rejects the update -----------------------------------

metrics=$it_dir/bound.jsonl
start_server bound --rounds 1 --min-clients 3 --quorum 0.5 --local-epochs 1 \
  --round-timeout 60000 --metrics "$metrics" --checkpoint-dir "$it_dir/ckpt1" \
  --test-data "$it_dir/data/test.safetensors"
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid
start_rogue rogue-bound --id client-0003 --cert "$it_dir/pki/client-0003.pem" \
  --key "$it_dir/pki/client-0003.key" --mode huge
wait_exit "$rogue_pid" 90
it_check "the rogue client is dropped (status $it_status)" test "$it_status" = 0
it_check "the rejection is logged with reason update_norm" \
  grep -Eq 'client=client-0003 reason=update_norm: .*update L2 norm [0-9.e+]+ exceeds max_update_norm 1e\+04' \
  "$it_dir/bound.log"
wait_exit "$server_pid" 120
it_check "server exits 0 after its round (status $it_status)" \
  test "$it_status" = 0
it_check "round 1 aggregated" \
  test "$(round_field "$metrics" 1 aggregated)" = true
it_check "round 1 has the 2 honest results" \
  test "$(round_field "$metrics" 1 clients_reported)" = 2
it_check "round 1 test loss is a number" \
  test "$(round_field "$metrics" 1 test_loss)" != null
largest=$($checkpoint_py max-abs "$it_dir/ckpt1/model.safetensors")
it_check "the checkpoint holds a sane model (max |w| = $largest)" \
  float_lt "$largest" 100
for pid in $pid1 $pid2; do
  wait_exit "$pid" 30
  it_check "honest client pid $pid exits 0 (status $it_status)" \
    test "$it_status" = 0
done

# --- With the bound off, the ruined round is rolled back --------------------

metrics=$it_dir/rollback.jsonl
: >"$it_dir/client-0001.log"
: >"$it_dir/client-0002.log"
start_server rollback --rounds 2 --min-clients 3 --quorum 0.5 \
  --local-epochs 1 --round-timeout 60000 --max-update-norm 0 \
  --retry-delay 100 --metrics "$metrics" --checkpoint-dir "$it_dir/ckpt2" \
  --test-data "$it_dir/data/test.safetensors"
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid
start_rogue rogue-rollback --id client-0004 \
  --cert "$it_dir/pki/client-0004.pem" --key "$it_dir/pki/client-0004.key" \
  --mode huge
wait_exit "$server_pid" 180
it_check "server exits 1: no round of the run was kept (status $it_status)" \
  test "$it_status" = 1
it_check "metrics file has 2 lines" test "$(metrics_lines "$metrics")" = 2
for round in 1 2; do
  it_check "round $round is not aggregated" \
    test "$(round_field "$metrics" "$round" aggregated)" = false
  it_check "round $round had 3 results" \
    test "$(round_field "$metrics" "$round" clients_reported)" = 3
done
it_check "the server logs two rollbacks with the test loss" \
  test "$(grep -c 'round rolled back, model unchanged .*test loss of the aggregated model is' \
    "$it_dir/rollback.log")" = 2
it_check "the server logs the failed run" \
  grep -q 'stopping, training failed: all rounds finished' "$it_dir/rollback.log"
it_check "no checkpoint of the ruined model was written" \
  test ! -e "$it_dir/ckpt2/model.safetensors"
it_check "round 2 waited after the abandoned round 1" \
  grep -q 'next round waits after abandoned rounds abandoned_in_row=1 delay_ms=100' \
  "$it_dir/rollback.log"
it_check "the honest clients trained round 2 without NaN or Inf" \
  test "$(grep -c 'local training done round=2' "$it_dir/client-0001.log" \
    "$it_dir/client-0002.log" | awk -F: '{ s += $2 } END { print s }')" = 2
it_check "no client training failed" \
  sh -c "! grep -q 'local training failed' '$it_dir/client-0001.log' '$it_dir/client-0002.log'"
for pid in $pid1 $pid2; do
  wait_exit "$pid" 30
  it_check "honest client pid $pid exits 0 (status $it_status)" \
    test "$it_status" = 0
done

it_finish
