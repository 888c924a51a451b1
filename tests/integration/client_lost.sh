#!/bin/sh
# Clients that fail mid-round: one killed with SIGKILL while it trains (the
# round closes once the others report), one frozen with SIGSTOP while it
# trains (the round closes at its deadline). Each round still aggregates
# the results it has, and the next rounds go on.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 3
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl
deadline_ms=8000

# Twenty local epochs make each training last long enough to be hit.
start_server server --rounds 4 --min-clients 2 --quorum 0.5 \
  --round-timeout $deadline_ms --local-epochs 20 --metrics "$metrics" \
  --test-data "$it_dir/data/test.safetensors"
start_client client-0001
start_client client-0002
pid_frozen=$client_pid
start_client client-0003
pid_killed=$client_pid

# SIGKILL client-0003 in the first round it trains in.
wait_for_log "$it_dir/client-0003.log" 'training round=[0-9]+' 60 ||
  it_abort "client-0003 never started training"
killed_round=$(grep -Eo 'training round=[0-9]+' "$it_dir/client-0003.log" |
  head -n 1 | sed 's/.*=//')
kill -KILL "$pid_killed"
wait_exit "$pid_killed" 10
it_log "killed client-0003 in round $killed_round"
it_check "client-0003 was killed before it finished round $killed_round" \
  sh -c "! grep -q 'local training done round=$killed_round ' '$it_dir/client-0003.log'"

wait_lines "$metrics" "$killed_round" 60 ||
  it_abort "round $killed_round never finished"
it_check "round $killed_round: one client lost" \
  test "$(round_field "$metrics" "$killed_round" clients_lost)" = 1
sampled=$(round_field "$metrics" "$killed_round" clients_sampled)
it_check "round $killed_round: the other $((sampled - 1)) reported" \
  test "$(round_field "$metrics" "$killed_round" clients_reported)" = $((sampled - 1))
it_check "round $killed_round: aggregated without the lost client" \
  test "$(round_field "$metrics" "$killed_round" aggregated)" = true

# SIGSTOP client-0002 while it trains the next round: only the deadline
# can close that round.
stop_round=$((killed_round + 1))
wait_for_log "$it_dir/client-0002.log" "training round=$stop_round " 60 ||
  it_abort "client-0002 never started round $stop_round"
kill -STOP "$pid_frozen"
wait_lines "$metrics" "$stop_round" 60 ||
  it_abort "round $stop_round never finished"
kill -CONT "$pid_frozen"
it_check "round $stop_round: 2 clients sampled" \
  test "$(round_field "$metrics" "$stop_round" clients_sampled)" = 2
it_check "round $stop_round: only client-0001 reported" \
  test "$(round_field "$metrics" "$stop_round" clients_reported)" = 1
it_check "round $stop_round: aggregated at the quorum" \
  test "$(round_field "$metrics" "$stop_round" aggregated)" = true
seconds=$(round_field "$metrics" "$stop_round" seconds)
it_check "round $stop_round lasted until the deadline ($seconds s)" \
  awk -v s="$seconds" -v d=$deadline_ms 'BEGIN { exit !(s * 1000 >= d - 50) }'
it_check "server logged the deadline" \
  grep -q "round closed round=$stop_round .*deadline" "$it_dir/server.log"

wait_exit "$server_pid" 120
it_check "server finishes all 4 rounds and exits 0 (status $it_status)" \
  test "$it_status" = 0
it_check "metrics file has 4 lines" test "$(metrics_lines "$metrics")" = 4
last=$(json_field "$metrics" 4 round)
it_check "the last line is round 4 (got $last)" test "$last" = 4
it_check "round 4 aggregated" test "$(json_field "$metrics" 4 aggregated)" = true

it_finish
