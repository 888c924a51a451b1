#!/bin/sh
# fedc-server and three fedc-client daemons with trainer = exec: each
# client trains with the PyTorch example trainer (examples/pytorch/train.py)
# over mutual TLS on loopback, three rounds of logistic regression on a
# twentieth of Fashion-MNIST each. Checks that every round aggregates all
# three updates, that test accuracy rises, and the exchange files in each
# work folder. Exits 77 (a meson skip) when /usr/bin/python3 has no torch.
. "$(dirname "$0")/lib.sh"

python=/usr/bin/python3
if ! "$python" -c 'import numpy, torch' 2>/dev/null; then
  echo "SKIP: $python cannot import torch and numpy, which the PyTorch example trainer needs"
  exit 77
fi

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 20
metrics=$it_dir/metrics.jsonl
trainer="$python $FEDC_SOURCE_ROOT/examples/pytorch/train.py"
clients="client-0001 client-0002 client-0003"

start_server server --rounds 3 --min-clients 3 --quorum 1 \
  --local-epochs 1 --learning-rate 0.05 --batch-size 32 \
  --test-data "$it_dir/data/test.safetensors" --metrics "$metrics"
for id in $clients; do
  start_client "$id" --trainer exec --trainer-command "$trainer" \
    --trainer-timeout 120 --work-dir "$it_dir/work-$id"
  eval "pid_$(echo "$id" | tr - _)=\$client_pid"
done

wait_exit "$server_pid" 180
it_check "server exits 0 after the last round (status $it_status)" \
  test "$it_status" = 0
for id in $clients; do
  eval "pid=\$pid_$(echo "$id" | tr - _)"
  wait_exit "$pid" 30
  it_check "$id exits 0 after Goodbye (status $it_status)" test "$it_status" = 0
  it_check "$id logged trainer=exec at start" \
    grep -q "trainer=exec work_dir=$it_dir/work-$id " "$it_dir/$id.log"
  it_check "$id ran the external trainer in 3 rounds" \
    test "$(grep -c 'trainer: external training done' "$it_dir/$id.log")" = 3
  it_check "$id reported no failed training" \
    sh -c "! grep -q 'local training failed' '$it_dir/$id.log'"
  it_check "$id: the trainer wrote its log" \
    grep -q 'trained [0-9]* steps on [0-9]* examples' "$it_dir/work-$id/trainer.log"
  it_check "$id: task.json names the absolute data path" \
    grep -q "\"data\": \"$it_dir/data/$id.safetensors\"" "$it_dir/work-$id/task.json"
  it_check "$id: task.json has the expanded spec" \
    grep -q '"spec_text": "input 784' "$it_dir/work-$id/task.json"
done

it_check "metrics file has 3 lines" test "$(metrics_lines "$metrics")" = 3
for line in 1 2 3; do
  it_check "round $line: 3 clients reported" \
    test "$(json_field "$metrics" $line clients_reported)" = 3
  it_check "round $line: aggregated" \
    test "$(json_field "$metrics" $line aggregated)" = true
  loss=$(json_field "$metrics" $line train_loss)
  it_check "round $line: the trainers' loss $loss is in (0, 3)" \
    awk -v a="$loss" 'BEGIN { exit !(a > 0 && a < 3) }'
done
acc1=$(json_field "$metrics" 1 test_accuracy)
acc3=$(json_field "$metrics" 3 test_accuracy)
it_log "test accuracy: round 1 $acc1, round 3 $acc3"
it_check "test accuracy after round 1 ($acc1) is above 0.3" \
  float_lt 0.3 "$acc1"
it_check "test accuracy rises from round 1 ($acc1) to round 3 ($acc3)" \
  float_lt "$acc1" "$acc3"

it_finish
