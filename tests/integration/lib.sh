# Shared helpers of the integration tests: real fedc-server and fedc-client
# processes on loopback, certificates from deploy/make-certs and client data
# from fedc-data, in a temporary folder per test.
#
# A test script sources this file, calls it_setup, runs its steps and ends
# with it_finish, which prints the Check-style summary line
# "Checks: N, Failures: F, Errors: 0" that scripts/count-tests reads. Every
# child process is killed when the script exits, however it exits.
#
# The meson test passes the paths in the environment:
#   FEDC_SERVER, FEDC_CLIENT, FEDC_DATA, ROGUE_CLIENT  executables
#   FEDC_SOURCE_ROOT                                   the source tree
#   FEDC_TEST_TIMEOUT                                  seconds for any one wait

set -u

it_checks=0
it_failures=0
it_pids=""
it_dir=""
it_timeout=${FEDC_TEST_TIMEOUT:-120}

it_log() {
  printf '%s\n' "$*" >&2
}

# Kills every child still running and keeps the folder when a check failed.
it_cleanup() {
  for pid in $it_pids; do
    kill -9 "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  if [ -n "$it_dir" ] && [ "$it_failures" -eq 0 ] && [ -z "${FEDC_KEEP_TEST_DIR:-}" ]; then
    rm -rf "$it_dir"
  elif [ -n "$it_dir" ]; then
    it_log "test files kept in $it_dir"
  fi
}

it_setup() {
  it_dir=$(mktemp -d "${TMPDIR:-/tmp}/fedc-it.XXXXXX")
  trap it_cleanup EXIT
  trap 'exit 1' INT TERM HUP
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:log_path=$it_dir/asan"
}

# it_check DESCRIPTION COMMAND...: runs the command and counts the check.
it_check() {
  desc=$1
  shift
  it_checks=$((it_checks + 1))
  if "$@"; then
    it_log "ok: $desc"
  else
    it_failures=$((it_failures + 1))
    it_log "FAIL: $desc"
  fi
}

# Fails the run when a sanitizer reported an error in any child.
it_check_sanitizers() {
  if ls "$it_dir"/asan.* >/dev/null 2>&1; then
    it_checks=$((it_checks + 1))
    it_failures=$((it_failures + 1))
    it_log "FAIL: sanitizer reports:"
    cat "$it_dir"/asan.* >&2
  fi
}

it_finish() {
  it_check_sanitizers
  if [ "$it_failures" -gt 0 ]; then
    for f in "$it_dir"/*.log; do
      [ -f "$f" ] || continue
      it_log "---- $f (last 40 lines)"
      tail -n 40 "$f" >&2
    done
  fi
  printf 'Checks: %d, Failures: %d, Errors: 0\n' "$it_checks" "$it_failures"
  [ "$it_failures" -eq 0 ]
  exit $?
}

# it_abort MESSAGE: a step the rest of the test depends on failed.
it_abort() {
  it_checks=$((it_checks + 1))
  it_failures=$((it_failures + 1))
  it_log "FAIL: $*"
  it_finish
}

it_track() {
  it_pids="$it_pids $1"
}

# wait_for_log FILE PATTERN [SECONDS]: waits until FILE has a line matching
# the extended regular expression PATTERN.
wait_for_log() {
  deadline=$(($(date +%s) + ${3:-$it_timeout}))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -Eq -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# wait_exit PID [SECONDS]: waits for a child to exit and sets it_status to
# its exit status; returns 1 (and kills it) on a timeout.
wait_exit() {
  deadline=$(($(date +%s) + ${2:-$it_timeout}))
  while kill -0 "$1" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      kill -9 "$1" 2>/dev/null
      wait "$1" 2>/dev/null
      it_status=timeout
      return 1
    fi
    sleep 0.1
  done
  wait "$1"
  it_status=$?
  return 0
}

# make_certs DIR N: a CA, a server certificate and clients client-0001..N.
make_certs() {
  "$FEDC_SOURCE_ROOT/deploy/make-certs" --out "$1" --clients "$2" >/dev/null ||
    it_abort "deploy/make-certs failed"
}

# make_data DIR N: Fashion-MNIST split over N clients with a Dirichlet(0.5)
# label skew, DIR/client-0001.safetensors and so on, plus the held-out test
# set DIR/test.safetensors. A test may start fewer clients than N to keep
# each client's data, and so its training time, small.
make_data() {
  "$FEDC_DATA" partition --dataset fashion-mnist --scheme dirichlet \
    --alpha 0.5 --clients "$2" --seed 7 --out "$1" \
    >"$it_dir/fedc-data.log" 2>&1 ||
    it_abort "fedc-data partition failed (see $it_dir/fedc-data.log)"
}

# start_server NAME FLAGS...: starts fedc-server with the test certificates
# on an ephemeral loopback port, or on port $restart_port when it is set,
# logging to $it_dir/NAME.log. Sets server_pid and server_port.
start_server() {
  name=$1
  shift
  "$FEDC_SERVER" --listen 127.0.0.1 --port "${restart_port:-0}" \
    --cert "$it_dir/pki/server.pem" --key "$it_dir/pki/server.key" \
    --ca "$it_dir/pki/ca.pem" --log-level debug "$@" \
    >"$it_dir/$name.log" 2>&1 &
  server_pid=$!
  it_track "$server_pid"
  wait_for_log "$it_dir/$name.log" 'server: listening .*port=[0-9]+' 60 ||
    it_abort "fedc-server did not start (see $it_dir/$name.log)"
  server_port=$(grep -Eo 'server: listening .*port=[0-9]+' "$it_dir/$name.log" |
    head -n 1 | sed 's/.*port=//')
}

# metrics_port LOG: the port of the Prometheus endpoint the server logged.
metrics_port() {
  grep -Eo 'serving metrics address=[^ ]+' "$1" | head -n 1 | sed 's/.*://'
}

# start_rogue NAME FLAGS...: starts rogue_client with the test CA against
# the server, logging to $it_dir/NAME.log. Sets rogue_pid.
start_rogue() {
  name=$1
  shift
  "$ROGUE_CLIENT" --host 127.0.0.1 --port "$server_port" \
    --ca "$it_dir/pki/ca.pem" --timeout 60 "$@" >"$it_dir/$name.log" 2>&1 &
  rogue_pid=$!
  it_track "$rogue_pid"
}

# start_client ID [FLAGS...]: starts fedc-client ID (client-0001, ...) on
# its own data file, logging to $it_dir/ID.log. Sets client_pid.
start_client() {
  id=$1
  shift
  "$FEDC_CLIENT" --server 127.0.0.1 --port "$server_port" --id "$id" \
    --cert "$it_dir/pki/$id.pem" --key "$it_dir/pki/$id.key" \
    --ca "$it_dir/pki/ca.pem" --data "$it_dir/data/$id.safetensors" \
    --reconnect-min 100 --reconnect-max 1000 --log-level debug "$@" \
    >>"$it_dir/$id.log" 2>&1 &
  client_pid=$!
  it_track "$client_pid"
}

# wait_lines FILE N [SECONDS]: waits until FILE has at least N lines.
wait_lines() {
  deadline=$(($(date +%s) + ${3:-$it_timeout}))
  while [ "$(metrics_lines "$1")" -lt "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# metrics_lines FILE: the number of lines in a JSON Lines file.
metrics_lines() {
  if [ -f "$1" ]; then wc -l <"$1" | tr -d ' '; else echo 0; fi
}

# json_field FILE LINE FIELD: prints FIELD of the LINE-th object (1-based).
json_field() {
  sed -n "${2}p" "$1" | sed -E "s/.*\"$3\": *([^,}]*).*/\\1/"
}

# round_field FILE ROUND FIELD: prints FIELD of the object of round ROUND.
round_field() {
  grep -E "^\{\"round\": $2," "$1" | head -n 1 |
    sed -E "s/.*\"$3\": *([^,}]*).*/\\1/"
}

# float_lt A B: true when A < B as decimal numbers.
float_lt() {
  awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'
}

# scrape PORT [PATH]: prints the body the server returns for GET PATH
# (default /metrics), or "HTTP STATUS" for an error status.
scrape() {
  /usr/bin/python3 - "$1" "${2:-/metrics}" <<'PY'
import sys, urllib.error, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}"
try:
    with urllib.request.urlopen(url, timeout=10) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(f"HTTP {e.code}")
PY
}
