#!/usr/bin/env bash
# A partition's consumer that goes away while the partition is read to its end (its server lost,
# or the server's inactivity threshold), on one server: two engines share 4 partitions and
# process the first part of a stream; then every partition's consumer is deleted, and the second
# part is sent. Each owner must notice within seconds (the consumer is asked whether it is still
# there), make a new consumer after what it processed, and read the second part: ALERTS ends up
# holding exactly the batch run's alerts, each once. Before, a partition read to its end never
# asked again and stopped reading for good.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats_lib.sh"
P=4
nats_single
two_part_stream

start_engine a --lease 3s --checkpoint-every 1s
start_engine b --lease 3s --checkpoint-every 1s
wait_for 60 "the partitions spread over a and b" eval 'owned_by a 2 && owned_by b 2'
"$TW" send --nats "$NATS_URL" --partitions $P part1.jsonl 2>/dev/null
wait_for 60 "the first part processed" all_done
sleep 2 # every partition read to its end for a while (idle)
expect_eq "consumers deleted" "$(python3 nats.py "$NATS_PORT" delconsumers $P)" $P
"$TW" send --nats "$NATS_URL" --partitions $P part2.jsonl 2>/dev/null
wait_for 60 "new consumers made" eval '[ "$(cat a.log b.log | grep -c "consumer made again")" -ge '$P' ]'
wait_for 60 "the second part processed" all_done
wait_for 60 "the alerts" alerts_at_least "$(wc -l <want.jsonl)"
sleep 3 # the idle partitions run their sweeps up to the newest event time
stop_engine a
stop_engine b
check_alerts want.jsonl
for f in dl-*.jsonl; do [ ! -s "$f" ] || { head -3 "$f"; fail "events were dead-lettered ($f)"; }; done
echo "consumers deleted while read to their end: made again, and ALERTS holds the batch run's $(wc -l <want.jsonl) alerts, each once"
