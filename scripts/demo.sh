#!/usr/bin/env bash
# The demo, end to end on this machine: private RabbitMQ and MariaDB under
# .rdb-servers/demo, the schema, a 2-process worker pool, and the reference scheduler
# (rdb-sim) for 30 ticks. Everything it starts, it stops. Extra arguments go to rdb-sim.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

dir="$PWD/.rdb-servers/demo"
pool_pid=""
cleanup() {
  if [ -n "$pool_pid" ] && kill -0 "$pool_pid" 2>/dev/null; then
    kill -TERM "$pool_pid" 2>/dev/null || true
    wait "$pool_pid" 2>/dev/null || true
  fi
  rdb-devservers stop --dir "$dir" --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT
rdb-devservers stop --dir "$dir" --purge >/dev/null 2>&1 || true

echo "==> starting private RabbitMQ and MariaDB in $dir"
rdb-devservers start --dir "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"

echo "==> rdb-schema upgrade"
rdb-schema upgrade

echo "==> rdb-worker --processes 2 (log: $dir/workers.log)"
rdb-worker --processes 2 --release-interval-s 5 >"$dir/workers.log" 2>&1 &
pool_pid=$!
python3 - <<'PY'
import os, time, pika
deadline = time.monotonic() + 60
while True:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(os.environ["RDB_AMQP_URL"]))
        consumers = conn.channel().queue_declare("rdb.requests", passive=True).method.consumer_count
        conn.close()
        if consumers >= 2:
            break
    except pika.exceptions.AMQPError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit("the worker pool did not start; see workers.log")
    time.sleep(0.2)
PY

echo "==> rdb-sim"
rdb-sim --ticks 30 "$@"
echo "==> done; the workers' last batch lines:"
grep "batch done" "$dir/workers.log" | tail -n 3 || true
