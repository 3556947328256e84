#!/usr/bin/env bash
# Lease expiry on NATS JetStream (docs/scaling.md), on one server: two engines share 12
# partitions; one is frozen with SIGSTOP and keeps nothing: within a bounded time (four lease
# times) the other holds every partition and processes what comes meanwhile. Thawed, the frozen
# one finds its leases gone, drops what it had not committed (nothing of it reaches ALERTS twice),
# and takes its share back. ALERTS ends up holding exactly the batch run's alerts, each once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats_lib.sh"
P=12
LEASE_S=2
nats_single

two_part_stream

start_engine a --lease ${LEASE_S}s --checkpoint-every 1s
start_engine b --lease ${LEASE_S}s --checkpoint-every 1s
wait_for 60 "the partitions spread over a and b" eval 'owned_by a 6 && owned_by b 6'
"$TW" send --nats "$NATS_URL" --partitions $P part1.jsonl 2>/dev/null
wait_for 60 "the first part processed" all_done

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
kill -CONT "${ENGINE[a]}"
wait_for 60 "a to notice its lost leases" grep -q "lease lost" a.log
wait_for 60 "the partitions spread over a and b again" eval 'owned_by a 6 && owned_by b 6'
wait_for 60 "everything processed" all_done
wait_for 60 "the alerts" alerts_at_least "$(wc -l <want.jsonl)"
sleep 3 # the idle partitions run their sweeps up to the newest event time
stop_engine a
stop_engine b
check_alerts want.jsonl
echo "lease expiry: a frozen engine's partitions moved in $took s; ALERTS holds the batch run's $(wc -l <want.jsonl) alerts, each once"
