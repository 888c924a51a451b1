#!/bin/sh
# Bad input from one peer: fedc-server logs the reason with the peer's
# address and client id, counts it in fedc_server_rejected_total{reason},
# drops only that peer, and the round goes on with the two honest clients.
#
# The server needs three clients per round, so each round runs with the two
# honest fedc-client daemons and one rogue_client that misbehaves after it
# receives its FitTask and the global model. Before the rounds, a client
# with a certificate from another CA and a plain-TCP client are rejected at
# the TLS handshake, and one that sends nothing is dropped at the Hello
# deadline. The server is configured for one round more than there
# are cases, so that it keeps serving /metrics after the last case, and is
# then stopped with SIGTERM.
. "$(dirname "$0")/lib.sh"

# mode, reason label, client id of the rogue
cases="oversize too_big client-0003
garbage protocol client-0004
truncated protocol client-0005
wrong-name shape client-0006
wrong-shape shape client-0007
nan nonfinite client-0008
inf nonfinite client-0009
stale-round stale client-0010
duplicate duplicate_result client-0011"
cases_count=$(printf '%s\n' "$cases" | wc -l | tr -d ' ')

it_setup
make_certs "$it_dir/pki" 12
make_certs "$it_dir/other-ca" 1
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl

start_server server --rounds $((cases_count + 1)) --min-clients 3 --quorum 0.5 \
  --round-timeout 60000 --metrics "$metrics" --metrics-listen 127.0.0.1:0 \
  --max-frame-bytes 2097152 --chunk-bytes 65536 --handshake-timeout 2000
http_port=$(metrics_port "$it_dir/server.log")
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid

# rejected REASON: the current value of fedc_server_rejected_total{REASON}.
rejected() {
  value=$(scrape "$http_port" | grep "^fedc_server_rejected_total{reason=\"$1\"} " |
    sed 's/.* //')
  echo "${value:-0}"
}

# wait_round ROUND: waits until the metrics file has the line of ROUND.
wait_round() {
  deadline=$(($(date +%s) + 90))
  until [ -n "$(round_field "$metrics" "$1" round)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# --- TLS handshake failures ---------------------------------------------

before=$(rejected tls_handshake)
start_rogue other-ca --id client-0001 --cert "$it_dir/other-ca/client-0001.pem" \
  --key "$it_dir/other-ca/client-0001.key" --mode honest
wait_exit "$rogue_pid" 60
it_check "client with another CA's certificate is refused (status $it_status)" \
  test "$it_status" = 2
wait_for_log "$it_dir/server.log" 'peer=127\.0\.0\.1:[0-9]+ client=unknown reason=tls' 10
it_check "server logs the TLS failure with the peer" test $? = 0
it_check "tls_handshake counter went from $before to 1 more" \
  test "$(rejected tls_handshake)" = $((before + 1))

before=$(rejected tls_handshake)
start_rogue plain-tcp --id plain --mode plain-tcp
wait_exit "$rogue_pid" 60
it_check "plain-TCP client is dropped (status $it_status)" test "$it_status" = 0
it_check "tls_handshake counter went from $before to 1 more" \
  test "$(rejected tls_handshake)" = $((before + 1))
it_check "two TLS failures are logged with the peer" \
  test "$(grep -Ec 'peer=127\.0\.0\.1:[0-9]+ client=unknown reason=tls' "$it_dir/server.log")" -ge 2

# --- A client that never sends Hello -----------------------------------

before=$(rejected hello_timeout)
start_rogue silent --id client-0012 --cert "$it_dir/pki/client-0012.pem" \
  --key "$it_dir/pki/client-0012.key" --mode silent
wait_exit "$rogue_pid" 30
it_check "client that sends no Hello is dropped (status $it_status)" \
  test "$it_status" = 0
it_check "hello_timeout counter went from $before to 1 more" \
  test "$(rejected hello_timeout)" = $((before + 1))
it_check "the Hello timeout is logged with the peer" \
  grep -Eq 'peer=127\.0\.0\.1:[0-9]+ client=client-0012 reason=hello_timeout' \
  "$it_dir/server.log"

# --- Protocol violations, one per round ---------------------------------

printf '%s\n' "$cases" >"$it_dir/cases.txt"
while read -r mode reason id; do
  before=$(rejected "$reason")
  start_rogue "rogue-$mode" --id "$id" --cert "$it_dir/pki/$id.pem" \
    --key "$it_dir/pki/$id.key" --mode "$mode"
  wait_exit "$rogue_pid" 90
  it_check "$mode: the server drops the rogue client (status $it_status)" \
    test "$it_status" = 0
  round=$(grep -Eo 'rogue: round=[0-9]+' "$it_dir/rogue-$mode.log" | sed 's/.*=//')
  if [ -z "$round" ]; then
    it_check "$mode: the rogue client was sampled for a round" false
    continue
  fi
  wait_for_log "$it_dir/server.log" \
    "peer=127\\.0\\.0\\.1:[0-9]+ client=$id reason=$reason" 10
  it_check "$mode: logged with peer, client=$id and reason=$reason" test $? = 0
  after=$(rejected "$reason")
  it_check "$mode: counter $reason went from $before to $after" \
    test "$after" = $((before + 1))
  wait_round "$round"
  it_check "$mode: round $round finished" test $? = 0
  it_check "$mode: round $round aggregated" \
    test "$(round_field "$metrics" "$round" aggregated)" = true
  reported=$(round_field "$metrics" "$round" clients_reported)
  if [ "$mode" = duplicate ]; then
    # The first of the two results is valid and may be in the aggregate.
    it_check "$mode: round $round has the honest results ($reported)" \
      test "$reported" -ge 2
  else
    it_check "$mode: round $round has the 2 honest results ($reported)" \
      test "$reported" = 2
  fi
done <"$it_dir/cases.txt"

kill -TERM "$server_pid"
wait_exit "$server_pid" 60
it_check "server exits 0 on SIGTERM (status $it_status)" test "$it_status" = 0
it_check "metrics file has $cases_count lines" \
  test "$(metrics_lines "$metrics")" = "$cases_count"
for pid in $pid1 $pid2; do
  wait_exit "$pid" 30
  it_check "honest client pid $pid exits 0 after Goodbye (status $it_status)" \
    test "$it_status" = 0
done
it_check "clients were told the server is shutting down" \
  grep -q "server shutting down" "$it_dir/client-0001.log"
it_check "no honest client was rejected" \
  sh -c "! grep -E 'client=client-000[12] reason=' '$it_dir/server.log'"

it_finish
