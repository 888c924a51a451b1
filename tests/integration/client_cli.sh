#!/bin/sh
# fedc-client without a server: --describe-model for good and bad specs,
# the checks on the trainer options that run before the daemon starts, and
# certificate reloads on SIGHUP.
. "$(dirname "$0")/lib.sh"

it_setup
make_certs "$it_dir/pki" 1

# run_client NAME FLAGS...: runs fedc-client to completion with output in
# $it_dir/NAME.out and sets status.
run_client() {
  name=$1
  shift
  "$FEDC_CLIENT" "$@" >"$it_dir/$name.out" 2>&1
  status=$?
}

run_client logreg --describe-model logreg:784:10
it_check "logreg description exits 0 (status $status)" test "$status" = 0
it_check "logreg description lists layer fc with 10 outputs" \
  grep -Eq '^ +fc +dense +10 +7850$' "$it_dir/logreg.out"
it_check "logreg description counts 7850 parameters" \
  grep -q '^parameters: 7850 ' "$it_dir/logreg.out"
it_check "logreg description gives the training memory" \
  grep -q '^training memory at batch 32: ' "$it_dir/logreg.out"

run_client layers --describe-model 'input 1x28x28; conv 8 3 pad=1 name=c; relu; maxpool 2; flatten; dense 10'
it_check "layer list description exits 0 (status $status)" test "$status" = 0
it_check "conv output shape is 8x28x28" \
  grep -Eq '^ +c +conv +8x28x28 +80$' "$it_dir/layers.out"
it_check "pooled and flattened shape is 1568" \
  grep -Eq ' flatten +1568 ' "$it_dir/layers.out"

# The daemon's own options are not needed to describe a model.
run_client bad-spec --describe-model mlp:784:oops
it_check "bad spec exits 2 (status $status)" test "$status" = 2
it_check "bad spec names the spec" \
  grep -q "invalid model spec 'mlp:784:oops'" "$it_dir/bad-spec.out"

# The checks below need every other required option to pass.
set -- --id client-0001 --cert "$it_dir/pki/client-0001.pem" \
  --key "$it_dir/pki/client-0001.key" --ca "$it_dir/pki/ca.pem" \
  --data "$it_dir/missing.safetensors" --port 1

run_client trainer-name "$@" --trainer torch
it_check "unknown trainer exits 2 (status $status)" test "$status" = 2
it_check "unknown trainer is named invalid" \
  grep -q "invalid trainer: expected builtin or exec" "$it_dir/trainer-name.out"

run_client no-command "$@" --trainer exec --work-dir "$it_dir/work"
it_check "exec without a command exits 2 (status $status)" test "$status" = 2
it_check "exec without a command says so" \
  grep -q "missing trainer_command" "$it_dir/no-command.out"

run_client no-work-dir "$@" --trainer exec --trainer-command true
it_check "exec without work_dir exits 2 (status $status)" test "$status" = 2
it_check "exec without work_dir says so" \
  grep -q "missing work_dir" "$it_dir/no-work-dir.out"

run_client timeout "$@" --trainer exec --trainer-command true \
  --work-dir "$it_dir/work" --trainer-timeout 4294968
it_check "too long a timeout exits 2 (status $status)" test "$status" = 2
it_check "too long a timeout is named invalid" \
  grep -q "invalid trainer_timeout" "$it_dir/timeout.out"

# A work_dir that is a file fails at startup, before any connection.
: >"$it_dir/a-file"
mkdir -p "$it_dir/data"
"$FEDC_DATA" partition --dataset fashion-mnist --clients 1 --out "$it_dir/data" \
  >"$it_dir/fedc-data.log" 2>&1 || it_abort "fedc-data partition failed"
set -- --id client-0001 --cert "$it_dir/pki/client-0001.pem" \
  --key "$it_dir/pki/client-0001.key" --ca "$it_dir/pki/ca.pem" \
  --data "$it_dir/data/client-0001.safetensors" --port 1
run_client file-work-dir "$@" --trainer exec --trainer-command true \
  --work-dir "$it_dir/a-file"
it_check "work_dir that is a file exits 1 (status $status)" test "$status" = 1
it_check "work_dir that is a file is logged" \
  grep -q "cannot create work_dir $it_dir/a-file: a file of that name exists" \
  "$it_dir/file-work-dir.out"

# SIGHUP reloads the TLS files for the next connection, while the client
# retries a port where nothing listens. A certificate whose CN is not the
# id keeps the previous files in use.
mkdir "$it_dir/tls"
cp "$it_dir/pki/client-0001.pem" "$it_dir/pki/client-0001.key" "$it_dir/tls/"
set -- --id client-0001 --cert "$it_dir/tls/client-0001.pem" \
  --key "$it_dir/tls/client-0001.key" --ca "$it_dir/pki/ca.pem" \
  --data "$it_dir/data/client-0001.safetensors" --server 127.0.0.1 --port 1 \
  --reconnect-min 100 --reconnect-max 500
"$FEDC_CLIENT" "$@" >"$it_dir/reload.log" 2>&1 &
reload_pid=$!
it_track "$reload_pid"
wait_for_log "$it_dir/reload.log" 'reconnecting in' 30 ||
  it_abort "client never tried to connect (see $it_dir/reload.log)"
kill -HUP "$reload_pid"
wait_for_log "$it_dir/reload.log" 'reloaded certificates cert=' 10
it_check "SIGHUP reloads the certificates" test $? = 0

make_certs "$it_dir/pki" 2
cp "$it_dir/pki/client-0002.pem" "$it_dir/tls/client-0001.pem"
cp "$it_dir/pki/client-0002.key" "$it_dir/tls/client-0001.key"
kill -HUP "$reload_pid"
wait_for_log "$it_dir/reload.log" 'certificate reload failed, keeping' 10
it_check "SIGHUP keeps the old files for a CN other than the id" test $? = 0
it_check "the client still runs after both reloads" kill -0 "$reload_pid"
kill -TERM "$reload_pid"
wait_exit "$reload_pid" 10
it_check "client exits 0 on SIGTERM (status $it_status)" test "$it_status" = 0

# A server that rejects the client certificate (another CA) does so after
# the client's TLS 1.3 handshake is done. The backoff restarts only at a
# Welcome, so the retry windows keep growing.
make_certs "$it_dir/other-pki" 1
start_server server --rounds 1 --min-clients 1
"$FEDC_CLIENT" --id client-0001 --cert "$it_dir/other-pki/client-0001.pem" \
  --key "$it_dir/other-pki/client-0001.key" --ca "$it_dir/pki/ca.pem" \
  --data "$it_dir/data/client-0001.safetensors" --server 127.0.0.1 \
  --port "$server_port" --reconnect-min 50 --reconnect-max 400 \
  >"$it_dir/other-ca.log" 2>&1 &
other_pid=$!
it_track "$other_pid"
wait_for_log "$it_dir/other-ca.log" 'reconnecting in [0-9]+ ms attempt=4 ' 30
it_check "rejected client reaches retry attempt 4" test $? = 0
it_check "server names the unknown CA" \
  grep -q 'reason=tls: TLS handshake failed: certificate verify failed' \
  "$it_dir/server.log"
kill -TERM "$other_pid" "$server_pid"
wait_exit "$other_pid" 10
wait_exit "$server_pid" 10

it_finish
