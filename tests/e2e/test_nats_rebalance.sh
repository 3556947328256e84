#!/usr/bin/env bash
# Rebalancing of partition leases on NATS JetStream (docs/scaling.md), on one server: one engine
# takes all 12 partitions; a second one joining gets half (the first gives them up after a
# checkpoint each, the second starts them from those checkpoints); an engine that stops gives its
# partitions up at once (no wait for an expiry) and the other takes them. ALERTS ends up holding
# exactly the batch run's alerts, each once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats_lib.sh"
P=12
LEASE_S=2
nats_single

two_part_stream

start_engine a --lease ${LEASE_S}s --checkpoint-every 1s
wait_for 60 "engine a to take all 12 partitions" owned_by a 12
"$TW" send --nats "$NATS_URL" --partitions $P part1.jsonl 2>/dev/null
wait_for 60 "the first part processed" all_done

# A second engine joins: a gives up half (after a checkpoint each), b takes them.
start_engine b --lease ${LEASE_S}s --checkpoint-every 1s
wait_for 60 "the partitions spread over a and b" eval 'owned_by a 6 && owned_by b 6'
grep -q "given up (rebalancing)" a.log || fail "a did not give partitions up to b"
grep -q "from the checkpoint" b.log || { cat b.log; fail "b did not start from a's checkpoints"; }
"$TW" send --nats "$NATS_URL" --partitions $P part2.jsonl 2>/dev/null
wait_for 60 "the second part processed" all_done

# b stops: it gives its partitions up at once, a takes them well within a lease time.
stop_engine b
grep -q "given up (stopping)" b.log || fail "b did not give its partitions up"
t0=$(date +%s.%N)
wait_for 60 "a to take b's partitions" owned_by a 12
took=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
echo "b stopped: a held every partition after $took s (lease ${LEASE_S} s)"
wait_for 60 "everything processed" all_done
wait_for 60 "the alerts" alerts_at_least "$(wc -l <want.jsonl)"
sleep 3 # the idle partitions run their sweeps up to the newest event time
stop_engine a
check_alerts want.jsonl
echo "rebalancing on join and on stop; ALERTS holds the batch run's $(wc -l <want.jsonl) alerts, each once"
