#!/usr/bin/env bash
# bench/nats/scale.sh [INSTITUTIONS [DAYS]]: events/s of a group of 1, 2 and 3 engines consuming a
# generated stream from NATS JetStream (docs/scaling.md), on a three-node cluster on loopback
# (streams and buckets with 3 replicas) and on one server (1 replica).
#
# For each setup and engine count: fresh servers; `send --nats` publishes the stream to EVENTS
# over 12 partitions (its rate is printed too); the engines start, share the partitions by leases
# and process everything. The rate is the stream's events over the time from the first
# acknowledged message to the last (engine start-up and balancing excluded), measured from the
# consumers' state. Every run's alerts must equal a batch run's (checked), so a fast wrong run
# cannot pass. Uses the test helpers (tests/e2e/nats_lib.sh, scripts/natsctl.py).
#
#   TW=build-rel/tutorwatch bench/nats/scale.sh            # 1000 institutions x 30 days
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export TW=${TW:-$root/build/tutorwatch}
TW=$(cd "$(dirname "$TW")" && pwd)/$(basename "$TW")
export TW_SOURCE_DIR=$root
export TW_WORK=${TW_WORK:-/tmp/tw-nats-scale}
institutions=${1:-1000}
days=${2:-30}
. "$root/tests/e2e/lib.sh"
. "$root/tests/e2e/nats_lib.sh"
P=12

"$TW" gen --institutions "$institutions" --days "$days" --seed 7 --out e.jsonl 2>/dev/null
total=$(wc -l <e.jsonl)
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts want.jsonl 2>/dev/null
t=$(date +%s.%N)
"$TW" run --rules "$RULES" --input e.jsonl --state ref2 --no-sync --alerts /dev/null 2>/dev/null
batch=$(python3 -c "print(round($total / ($(date +%s.%N) - $t)))")
echo "stream: $total events, $(wc -l <want.jsonl) alerts; one batch run (run --input, no sync): $batch events/s"

now() { date +%s.%N; }
fresh() { # servers as $1 (single | cluster), with empty storage
  for p in "${NATS_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  NATS_PIDS=()
  rm -rf js js0 js1 js2 st-* dl-*
  "nats_$1"
}

printf '\n%-8s %-8s %12s %14s %10s\n' setup engines "events/s" "send events/s" alerts
for setup in cluster single; do
  replicas=1
  [ "$setup" = cluster ] && replicas=3
  for n in 1 2 3; do
    fresh $setup
    t=$(now)
    "$TW" send --nats "$NATS_URL" --partitions $P --replicas $replicas e.jsonl 2>/dev/null
    send_rate=$(python3 -c "print(round($total / ($(now) - $t)))")
    for i in $(seq 1 $n); do
      start_engine "e$i" --replicas $replicas --lease 5s --checkpoint-every 30s
    done
    # From the first message acknowledged to the last.
    while [ "$(python3 nats.py "$NATS_PORT" pending $P)" -ge "$total" ]; do sleep 0.05; done
    t=$(now)
    while ! all_done; do sleep 0.05; done
    rate=$(python3 -c "print(round($total / ($(now) - $t)))")
    sleep 3 # sweeps of the idle partitions
    for i in $(seq 1 $n); do stop_engine "e$i"; done
    python3 nats.py "$NATS_PORT" stream ALERTS | jq -r '.data' | sort >got.sorted
    sort want.jsonl | cmp -s - got.sorted || fail "$setup, $n engines: ALERTS differs from the batch run"
    printf '%-8s %-8s %12s %14s %10s\n' $setup $n "$rate" "$send_rate" "$(wc -l <got.sorted)"
  done
done
