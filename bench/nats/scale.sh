#!/usr/bin/env bash
# bench/nats/scale.sh [INSTITUTIONS [DAYS]]: events/s of a group of 1, 2 and 3 engines consuming a
# generated stream from NATS JetStream (docs/scaling.md), on a three-node cluster on loopback
# (streams and buckets with 3 replicas) and on one server (1 replica).
#
# For each setup and engine count: fresh servers; the engines start, share the 12 partitions by
# leases and make their consumers; they are paused while `send --nats` publishes the stream (its
# rate is printed too), then resumed. The rate is the stream's events over the time from the
# resume to the last acknowledgement, read from the consumers' state (start-up, balancing and
# publishing excluded). Every run's alerts must equal a batch run's (checked), so a fast wrong run
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
    # The engines start on an empty stream, take their shares and make their consumers; then
    # they are paused (SIGSTOP; 60 s leases outlast the pause) while the stream is sent, and
    # resumed: the rate is the stream over the time from the resume to the last acknowledgement.
    for i in $(seq 1 $n); do
      start_engine "e$i" --replicas $replicas --lease 60s --checkpoint-every 60s
    done
    python3 nats.py "$NATS_PORT" ready
    shared() { all_owned && for i in $(seq 1 $n); do owned_by "e$i" $(((P + n - 1) / n)) ||
      owned_by "e$i" $((P / n)) || return 1; done; }
    wait_for 120 "the partitions shared by $n engines" shared
    wait_for 60 "every consumer made" eval '[ "$(python3 nats.py "$NATS_PORT" left $P)" = 0 ]'
    for i in $(seq 1 $n); do kill -STOP "${ENGINE[e$i]}"; done
    t=$(now)
    "$TW" send --nats "$NATS_URL" --partitions $P --replicas $replicas e.jsonl 2>/dev/null
    send_rate=$(python3 -c "print(round($total / ($(now) - $t)))")
    t=$(now)
    for i in $(seq 1 $n); do kill -CONT "${ENGINE[e$i]}"; done
    while ! all_done; do sleep 0.05; done
    rate=$(python3 -c "print(round($total / ($(now) - $t)))")
    sleep 3 # sweeps of the idle partitions
    for i in $(seq 1 $n); do stop_engine "e$i"; done
    python3 nats.py "$NATS_PORT" stream ALERTS | jq -r '.data' | sort >got.sorted
    sort want.jsonl | cmp -s - got.sorted || fail "$setup, $n engines: ALERTS differs from the batch run"
    printf '%-8s %-8s %12s %14s %10s\n' $setup $n "$rate" "$send_rate" "$(wc -l <got.sorted)"
  done
done
