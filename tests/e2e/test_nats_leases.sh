#!/usr/bin/env bash
# Partition leases on NATS JetStream (docs/scaling.md), on one server:
# - rebalancing: one engine takes all 12 partitions; a second one joining gets half; an engine
#   that stops gives its partitions up at once and the other takes them;
# - lease expiry: an engine frozen with SIGSTOP keeps nothing: within a bounded time (the lease
#   time and a few renewal rounds) the other holds every partition; thawed, the frozen one finds
#   its leases gone, drops what it had not committed, and takes its share again.
# Throughout, ALERTS ends up holding exactly the batch run's alerts, each once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats_lib.sh"
P=12
LEASE_S=2
nats_single

"$TW" gen --institutions 100 --days 20 --seed 3 --out e.jsonl 2>/dev/null
total=$(wc -l <e.jsonl)
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts want.jsonl 2>/dev/null
# Split at the night gap nearest the middle (the stream is in event-time order, days apart by
# hours), so events sent in two parts are processed as one stream would be.
half=$(jq -r '.ts' e.jsonl | python3 -c '
import sys, datetime
ts = [datetime.datetime.fromisoformat(l.strip()).timestamp() for l in sys.stdin]
mid = len(ts) // 2
best = max(range(1, len(ts)), key=lambda i: (ts[i] - ts[i - 1] > 6 * 3600, -abs(i - mid)))
print(best)')
head -n "$half" e.jsonl >part1.jsonl
tail -n +"$((half + 1))" e.jsonl >part2.jsonl

# One engine takes every partition.
start_engine a --lease ${LEASE_S}s --checkpoint-every 1s
wait_for 60 "engine a to take all 12 partitions" owned_by a 12
"$TW" send --nats "$NATS_URL" --partitions $P part1.jsonl 2>/dev/null
wait_for 60 "the first part processed" all_done

# A second engine joins: a gives up half (after a checkpoint each), b takes them.
start_engine b --lease ${LEASE_S}s --checkpoint-every 1s
wait_for 60 "the partitions spread over a and b" eval 'owned_by a 6 && owned_by b 6'
grep -q "given up (rebalancing)" a.log || fail "a did not give partitions up to b"
grep -q "from the checkpoint" b.log || { cat b.log; fail "b did not start from a's checkpoints"; }

# Lease expiry: a is frozen; b holds all within a bound.
kill -STOP "${ENGINE[a]}"
t0=$(date +%s.%N)
wait_for 60 "b to take a's partitions" owned_by b 12
took=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
echo "a frozen: b held every partition after $took s (lease ${LEASE_S} s)"
python3 -c "import sys; sys.exit(0 if $took <= $LEASE_S * 4 else 1)" ||
  fail "a's partitions moved after $took s, more than 4 lease times"
# The second part comes while a is frozen; b processes it all.
"$TW" send --nats "$NATS_URL" --partitions $P part2.jsonl 2>/dev/null
wait_for 60 "the second part processed" all_done
# Thawed, a finds every lease gone: it drops its partitions without committing, then takes its
# share again.
kill -CONT "${ENGINE[a]}"
wait_for 60 "a to notice its lost leases" grep -q "lease lost" a.log
wait_for 60 "the partitions spread over a and b again" eval 'owned_by a 6 && owned_by b 6'

# b stops: it gives its partitions up at once (no wait for an expiry), a takes them.
stop_engine b
grep -q "given up (stopping)" b.log || fail "b did not give its partitions up"
t0=$(date +%s.%N)
wait_for 60 "a to take b's partitions" owned_by a 12
echo "b stopped: a held every partition after $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
wait_for 60 "everything processed" all_done
wait_for 60 "the alerts" alerts_at_least "$(wc -l <want.jsonl)"
sleep 3 # the idle partitions run their sweeps up to the newest event time
stop_engine a
check_alerts want.jsonl
echo "leases: rebalancing on join and stop, expiry of a frozen engine; ALERTS holds the batch run's $(wc -l <want.jsonl) alerts, each once"
