#!/usr/bin/env bash
# Stop Ray on every worker of a `ray up cluster.yaml` cluster; run on the head, before `ray down`:
#   ray exec cluster.yaml '~/taxoclass/scripts/stop_workers.sh' && ray down -y cluster.yaml
# `ray down` with provider `local` runs `ray stop` on the head only and marks the workers terminated
# in a state file: their raylets die once the head is gone, but other Ray processes stay (seen on Ray
# 2.60, tests/test_ray_up.py; ray-project/ray#17022). The head reaches each worker as the autoscaler
# does: the ssh user and worker_ips of ~/ray_bootstrap_config.yaml, the key ~/ray_bootstrap_key.pem.
set -uo pipefail
cfg=${1:-$HOME/ray_bootstrap_config.yaml}
py=$HOME/taxoclass/.venv/bin/python
read -r user ips < <("$py" -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1]))
print(c["auth"]["ssh_user"], " ".join(c["provider"].get("worker_ips", [])))' "$cfg") || exit 1
status=0
for ip in $ips; do
  ssh -i "$HOME/ray_bootstrap_key.pem" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=10 -o BatchMode=yes "$user@$ip" '~/taxoclass/.venv/bin/ray stop' >/dev/null 2>&1
  rc=$?
  case $rc in
    0) echo "stop_workers: $ip: Ray stopped" ;;
    255) echo "stop_workers: $ip: not reached (a lost host has nothing left to stop)" ;;
    *) echo "stop_workers: $ip: ray stop exited $rc"; status=1 ;;
  esac
done
exit $status
