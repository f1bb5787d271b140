#!/usr/bin/env bash
# Debian packages the test suite and benchmarks use. Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
ldconfig -p 2>/dev/null | grep -c libcairo.so.2 >/dev/null || need+=(libcairo2)  # cairosvg (chart PNG)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install-system: missing ${need[*]} and not root; tests needing them will skip" >&2; exit 0; fi
  echo "install-system: installing ${need[*]}" >&2
  # another apt/dpkg (unattended-upgrades, a parallel make) may hold the lock: wait for it (about 5 min at most)
  # (DPkg::Lock::Timeout covers the dpkg lock; `update` also takes the lists lock, so it is retried)
  for attempt in $(seq 1 30); do
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null && break
    [ "$attempt" = 30 ] && { echo "install-system: apt-get update kept failing" >&2; exit 1; }
    echo "install-system: apt lists busy or unreachable, retrying in 10 s" >&2; sleep 10
  done
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
