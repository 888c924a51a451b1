#!/bin/sh
# fedc-server against peers that try to exhaust it, and against a
# checkpoint folder it cannot write:
# - an unusable checkpoint_dir stops the server at startup with the path
#   and the reason, and a checkpoint that fails mid-run is logged, counted
#   in fedc_server_checkpoint_failures_total and ends in exit status 1;
# - a ClientHello followed by a close or a reset is counted as
#   rejected_total{reason="handshake_io"};
# - a large frame before Hello is dropped at the header, and a 16 MB frame
#   that would decode to hundreds of MB after Hello is dropped quickly;
# - rejections before an accepted Hello name the certificate's CN;
# - idle connections from 127.0.0.2 take at most max_handshakes_per_ip
#   handshake slots, so honest clients on 127.0.0.1 still train.
. "$(dirname "$0")/lib.sh"

raw_peer="/usr/bin/python3 $FEDC_SOURCE_ROOT/tests/integration/raw_peer.py"

it_setup
make_certs "$it_dir/pki" 8
make_data "$it_dir/data" 10
metrics=$it_dir/metrics.jsonl

# run_server_briefly NAME FLAGS...: runs a server that should exit at once
# and sets it_status.
run_server_briefly() {
  name=$1
  shift
  "$FEDC_SERVER" --listen 127.0.0.1 --port 0 \
    --cert "$it_dir/pki/server.pem" --key "$it_dir/pki/server.key" \
    --ca "$it_dir/pki/ca.pem" "$@" >"$it_dir/$name.log" 2>&1 &
  pid=$!
  it_track "$pid"
  wait_exit "$pid" 30
}

# --- Checkpoint folder checked at startup ---------------------------------

touch "$it_dir/not-a-folder"
run_server_briefly ckpt-file --checkpoint-dir "$it_dir/not-a-folder"
it_check "checkpoint_dir on a regular file: exit status 1 ($it_status)" \
  test "$it_status" = 1
it_check "the log names the path and the reason" \
  grep -q "cannot use checkpoint_dir=$it_dir/not-a-folder: Not a directory" \
  "$it_dir/ckpt-file.log"
it_check "the last line gives the exit reason" \
  grep -q "exiting status=1: startup failed" "$it_dir/ckpt-file.log"

run_server_briefly ckpt-proc --checkpoint-dir /proc/fedc-no-such-folder
it_check "checkpoint_dir under /proc: exit status 1 ($it_status)" \
  test "$it_status" = 1
it_check "the log names the path and the reason" \
  grep -Eq "checkpoint_dir=/proc/fedc-no-such-folder: (No such file|Permission|Read-only)" \
  "$it_dir/ckpt-proc.log"

# --- The server under test ----------------------------------------------

# A third client whose external trainer fails, but only once the test
# creates $it_dir/release (which it removes) or $it_dir/open, keeps each
# round open for as long as the test needs to read /metrics. The round then
# closes with the two other clients' results.
cat >"$it_dir/gated-trainer.sh" <<TRAINER
#!/bin/sh
while [ ! -f "$it_dir/release" ] && [ ! -f "$it_dir/open" ]; do
  sleep 0.1
done
rm -f "$it_dir/release"
exit 1
TRAINER
chmod +x "$it_dir/gated-trainer.sh"

start_server server --rounds 3 --min-clients 3 --quorum 0.5 --local-epochs 1 \
  --checkpoint-dir "$it_dir/ckpt" --metrics "$metrics" \
  --metrics-listen 127.0.0.1:0 --handshake-timeout 3000 \
  --max-handshakes 8 --max-handshakes-per-ip 2
http_port=$(metrics_port "$it_dir/server.log")
# The folder passed the startup check; every checkpoint write now fails.
rm -rf "$it_dir/ckpt"
touch "$it_dir/ckpt"

# counter NAME [LABELS]: the value of NAME{LABELS} on /metrics, or 0.
counter() {
  if [ -n "${2:-}" ]; then series="$1{$2}"; else series=$1; fi
  value=$(scrape "$http_port" | awk -v s="$series" '$1 == s { print $2 }')
  echo "${value:-0}"
}

# wait_counter NAME LABELS VALUE: waits until the counter reaches VALUE.
wait_counter() {
  deadline=$(($(date +%s) + 20))
  while [ "$(counter "$1" "$2")" -lt "$3" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# --- Abandoned TLS handshakes are counted --------------------------------

$raw_peer client-hello-close "$server_port"
wait_counter fedc_server_rejected_total 'reason="handshake_io"' 1
it_check "ClientHello then close: handshake_io is 1" test $? = 0
$raw_peer client-hello-close "$server_port" reset
wait_counter fedc_server_rejected_total 'reason="handshake_io"' 2
it_check "ClientHello then reset: handshake_io is 2" test $? = 0
it_check "handshake_busy is present and 0" \
  test "$(counter fedc_server_rejected_total 'reason="handshake_busy"')" = 0

# --- Frames that would cost memory ----------------------------------------

$raw_peer send "$server_port" "$it_dir/pki" client-0003 big-first \
  >"$it_dir/big-first.log" 2>&1
it_check "a 100 KB frame before Hello is dropped at its header" \
  grep -q "client=client-0003 reason=too_big: frame length [0-9]* above the maximum 16384" \
  "$it_dir/server.log"

$raw_peer send "$server_port" "$it_dir/pki" client-0004 amplify \
  >"$it_dir/amplify.log" 2>&1
seconds=$(sed -n 's/^closed seconds=//p' "$it_dir/amplify.log")
it_check "a 16 MB frame of empty specs after Hello is dropped (${seconds:-no close} s)" \
  float_lt "${seconds:-99}" 10
it_check "the drop names the memory budget" \
  grep -q "client=client-0004 reason=too_big: frame of 16000011 bytes needs more than" \
  "$it_dir/server.log"

# --- Rejections before Hello name the certificate ------------------------

printf '%s\n' "client-0005 goodbye-first message" \
  "client-0006 hello-version-2 version" \
  "client-0007 hello-other-id message" \
  "client-0008 hello-empty-id message" >"$it_dir/early.txt"
while read -r id kind reason; do
  $raw_peer send "$server_port" "$it_dir/pki" "$id" "$kind" \
    >"$it_dir/$kind.log" 2>&1
  it_check "$kind: logged as client=$id reason=$reason" \
    grep -q "rejected client peer=127.0.0.1:[0-9]* client=$id reason=$reason" \
    "$it_dir/server.log"
done <"$it_dir/early.txt"
it_check "no rejection is logged with client=unknown" \
  sh -c "! grep -q 'rejected client .*client=unknown' '$it_dir/server.log'"

# --- Idle connections from one address ------------------------------------

$raw_peer idle "$server_port" 127.0.0.2 20 30 >"$it_dir/idle.log" 2>&1 &
idle_pid=$!
it_track "$idle_pid"
wait_for_log "$it_dir/idle.log" '^opened=20' 20 ||
  it_abort "the idle connections did not open (see $it_dir/idle.log)"
start_client client-0001
pid1=$client_pid
start_client client-0002
pid2=$client_pid
start_client client-0003 --trainer exec \
  --trainer-command "$it_dir/gated-trainer.sh" --work-dir "$it_dir/work"
pid3=$client_pid

wait_for_log "$it_dir/server.log" 'round started round=1 ' 60
it_check "round 1 starts with the honest clients on 127.0.0.1" test $? = 0
it_check "connections beyond 2 from 127.0.0.2 were rejected" \
  test "$(counter fedc_server_rejected_total 'reason="handshake_ip_limit"')" -ge 18
it_check "no connection hit the global handshake limit" \
  test "$(counter fedc_server_rejected_total 'reason="handshake_busy"')" = 0
it_check "no checkpoint failure before the first checkpoint" \
  test "$(counter fedc_server_checkpoint_failures_total)" = 0

touch "$it_dir/release"
wait_for_log "$it_dir/server.log" 'checkpoint of round=1 not written' 60
it_check "the failed checkpoint of round 1 is logged" test $? = 0
it_check "the log gives the reason" \
  grep -q "not written: cannot use checkpoint_dir=$it_dir/ckpt: Not a directory" \
  "$it_dir/server.log"
it_check "fedc_server_checkpoint_failures_total counts it" \
  test "$(counter fedc_server_checkpoint_failures_total)" = 1
touch "$it_dir/open"

wait_exit "$server_pid" 120
it_check "the server exits 1 after failed checkpoints (status $it_status)" \
  test "$it_status" = 1
it_check "the last line gives the reason" \
  grep -q "exiting status=1: 3 checkpoint writes failed and none was written" \
  "$it_dir/server.log"
it_check "all 3 rounds finished" test "$(metrics_lines "$metrics")" = 3
for pid in $pid1 $pid2 $pid3; do
  wait_exit "$pid" 30
  it_check "client pid $pid exits 0 (status $it_status)" \
    test "$it_status" = 0
done
kill "$idle_pid" 2>/dev/null

it_finish
