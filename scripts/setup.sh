#!/usr/bin/env bash
# Install what the rdb needs on a fresh Debian 12 machine: the RabbitMQ and MariaDB
# packages (never started as system services: the rdb runs private instances) and the
# Python package with its test extras. Safe to run again; skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
command -v mariadbd >/dev/null 2>&1 || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
if ((${#need_apt[@]})); then
  echo "==> apt-get install ${need_apt[*]} (services are not started)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  # Debian starts a package's service on install unless policy-rc.d says no.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_cmd chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${need_apt[@]}"
  [ "$made_policy" -eq 0 ] || $sudo_cmd rm -f /usr/sbin/policy-rc.d
fi

# Checked from / so the checkout itself on sys.path can't pass for an installed package,
# and the installed package must be this checkout (an older clone's editable install
# would otherwise serve the console scripts).
here="$PWD"
installed=$(cd / && python3 -c "import os, rdb_worker, pika, sqlalchemy, alembic, testcontainers, tqdm, \
prometheus_client, yaml, msgpack; print(os.path.dirname(os.path.dirname(os.path.realpath(rdb_worker.__file__))))" \
  2>/dev/null || true)
if ! command -v rdb-worker >/dev/null 2>&1 || [ "$installed" != "$(realpath "$here")" ] \
   || [ "${RDB_FORCE_PIP:-0}" = 1 ]; then
  echo "==> pip install -e .[test]"
  python3 -m pip install -q --disable-pip-version-check -e '.[test]'
fi
