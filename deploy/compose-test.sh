#!/usr/bin/env bash
# Start a compose file of sessiond nodes from the locally built image (deploy/build-image.sh),
# with TLS and authentication on, and check what an operator relies on:
#   a session created through node 1 is read through the last node; the leader's container is
#   killed and the session still validates (the client moves on); the node is started again
#   and catches up; `docker-compose down` keeps the data volumes and `up` serves them again.
#
#   deploy/compose-test.sh [COMPOSE_FILE] [NODES]   (default: deploy/compose.yaml 3)
#
# Needs docker-compose, python3 and the release sessiond and sessionctl binaries; uses the
# compose file's published ports (127.0.0.1:7001-700N).
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-deploy/compose.yaml}"
nodes="${2:-3}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/sessiond-target}/release"
work="$(mktemp -d)"
project="sessiond-compose-test-$$"
# The compose file mounts ./certs beside itself: run a copy in the work directory.
cp "$file" "$work/compose.yaml"
# docker-compose reports progress on stderr: kept in a log, shown if the test fails.
dc() { docker-compose -p "$project" -f "$work/compose.yaml" "$@" 2>>"$work/compose.log"; }
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$work/compose.log" ]; then tail -40 "$work/compose.log" >&2; fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

hosts=()
endpoints=()
for i in $(seq 1 "$nodes"); do
  hosts+=(--host "node$i")
  endpoints+=("127.0.0.1:700$i")
done
all="$(IFS=,; echo "${endpoints[*]}")"
"$bin/sessiond" certs --certs-dir "$work/certs" local --nodes "$nodes" "${hosts[@]}" \
  --host 127.0.0.1 --host localhost --client admin=app+watch+operator >/dev/null
export SESSIOND_CA="$work/certs/ca.crt"
export SESSIOND_CERT="$work/certs/client-admin.crt"
export SESSIOND_KEY="$work/certs/client-admin.key"
ctl() { "$bin/sessionctl" --endpoints "$1" --timeout 20s "${@:2}"; }
json() { python3 -c "import json,sys; print(json.loads(sys.stdin.readline())$1)"; }

step() { echo "compose-test ($nodes nodes): $*"; }

# Rows of `status --json` (one per endpoint); the leader's id once every node agrees on it
# and the leader has applied its log.
agreed_leader() {
  ctl "$all" --json status 2>/dev/null | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
ok = [r for r in rows if "error" not in r]
leaders = {r.get("leader") for r in ok}
want = int(sys.argv[1])
if len(ok) == want and len(leaders) == 1 and 0 not in leaders and None not in leaders:
    lead = [r for r in ok if r.get("role") == "leader"]
    if lead and all(r["applied_index"] >= lead[0]["applied_index"] for r in ok):
        print(lead[0]["id"])
' "$1"
}

wait_leader() {
  local want="$1" id
  for _ in $(seq 1 120); do
    id="$(agreed_leader "$want" || true)"
    if [ -n "$id" ]; then echo "$id"; return 0; fi
    sleep 0.5
  done
  ctl "$all" status || true
  dc logs --tail 30 || true
  echo "compose-test: no agreed leader among $want nodes within 60 s" >&2
  return 1
}

step "up"
dc up -d >/dev/null
leader="$(wait_leader "$nodes")"
step "leader is node $leader"

token="$(ctl 127.0.0.1:7001 --json session create --user alice --data hello | json '["token"]')"
got="$(ctl "127.0.0.1:700$nodes" --json session get "$token" | json '["session"]["user_id"]')"
[ "$got" = alice ] || { echo "read through node $nodes: user $got" >&2; exit 1; }
step "created through node 1, read through node $nodes"

step "kill the leader's container (node $leader)"
docker kill "$(dc ps -q "node$leader")" >/dev/null
got="$(ctl "$all" --json session get "$token" | json '["session"]["user_id"]')"
[ "$got" = alice ] || { echo "after killing the leader: user $got" >&2; exit 1; }
rotated="$(ctl "$all" --json session rotate "$token" | json '["token"]')"
step "the session validates and rotates without node $leader"

dc start "node$leader" >/dev/null
new_leader="$(wait_leader "$nodes")"
got="$(ctl "127.0.0.1:700$leader" --json session get --stale "$rotated" | json '["session"]["user_id"]')"
[ "$got" = alice ] || { echo "node $leader after restart: user $got" >&2; exit 1; }
step "node $leader is back and caught up (leader now node $new_leader)"

step "down (volumes kept), up again"
dc down >/dev/null
dc up -d >/dev/null
wait_leader "$nodes" >/dev/null
got="$(ctl "$all" --json session get "$rotated" | json '["session"]["user_id"]')"
[ "$got" = alice ] || { echo "after down and up: user $got" >&2; exit 1; }
step "passed"
