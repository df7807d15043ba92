#!/usr/bin/env bash
# Run a command in private network and PID namespaces with only loopback up: Ray's traffic
# stays on this machine, and no other Ray instance on it is visible (or stopped). As root
# where unshare is allowed; elsewhere the command runs as is (the tests then bind Ray to 127.0.0.1).
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
  exec unshare -n -p -f --mount-proc bash -c 'ip link set lo up 2>/dev/null || true; exec "$@"' _ "$@"
fi
exec "$@"
