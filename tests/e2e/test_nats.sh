#!/usr/bin/env bash
# Scale-out and high availability on NATS JetStream (issue 9, docs/scaling.md): a three-node
# JetStream cluster on loopback (streams and buckets with 3 replicas), a generated stream sent to
# EVENTS over 12 partitions, three engines sharing them by leases. Mid-stream one engine is killed
# with -9 and so is one NATS node. At the end the ALERTS stream holds exactly the alerts of a
# single-engine batch run over the same events: the same alerts byte for byte, none missing,
# none twice, each with Nats-Msg-Id = alert_id.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats_lib.sh"
P=12

# Usage errors exit 2; no server exits 1 with the reason.
port=$(free_port)
status() { "$@" 2>/dev/null && echo 0 || echo $?; }
expect_eq "--nats without --partitions" \
  "$(status "$TW" send --nats "nats://127.0.0.1:$port" /dev/null)" 2
expect_eq "--nats with --connect" "$(status "$TW" send --nats "nats://127.0.0.1:$port" \
  --partitions 2 --connect tcp://127.0.0.1:1 /dev/null)" 2
expect_eq "--nats with --input" "$(status "$TW" run --rules "$RULES" --nats \
  "nats://127.0.0.1:$port" --partitions 4 --input /dev/null --state s)" 2
expect_eq "--nats without --state" \
  "$(status "$TW" run --rules "$RULES" --nats "nats://127.0.0.1:$port" --partitions 4)" 2
expect_eq "--lease below 1s" "$(status "$TW" run --rules "$RULES" --nats \
  "nats://127.0.0.1:$port" --partitions 4 --state s --lease 500ms)" 2
expect_eq "--engine-id with a dot" "$(status "$TW" run --rules "$RULES" --nats \
  "nats://127.0.0.1:$port" --partitions 4 --state s --engine-id a.b)" 2
expect_eq "--nats with --feed" "$(status "$TW" run --rules "$RULES" --nats \
  "nats://127.0.0.1:$port" --partitions 4 --state s --feed tcp://127.0.0.1:1)" 2
expect_eq "--partitions without --nats" \
  "$(status "$TW" run --rules "$RULES" --partitions 4 --input /dev/null)" 2
expect_eq "--nats with a missing rule file (checked before joining)" "$(status "$TW" run \
  --rules no-such.yaml --nats "nats://127.0.0.1:$port" --partitions 4 --state s)" 2
"$TW" send --nats "nats://127.0.0.1:$port" --partitions 4 /dev/null 2>noserver.log &&
  fail "send without a server"
grep -q "No server available" noserver.log || { cat noserver.log; fail "no reason given"; }

nats_cluster

# Seed 5, 300 institutions over 30 days: about 45,000 events and 43 alerts.
"$TW" gen --institutions 300 --days 30 --seed 5 --out e.jsonl 2>/dev/null
total=$(wc -l <e.jsonl)
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts want.jsonl 2>/dev/null
[ "$(wc -l <want.jsonl)" -ge 20 ] || fail "the reference run raised too few alerts"

# Three engines join; the leases spread the 12 partitions 4, 4, 4 before any event comes.
for id in e1 e2 e3; do start_engine $id --replicas 3 --lease 3s --checkpoint-every 2s; done
balanced() { owned_by e1 4 && owned_by e2 4 && owned_by e3 4; }
wait_for 120 "the partitions spread over three engines" balanced

"$TW" send --nats "$NATS_URL" --partitions $P --replicas 3 e.jsonl 2>send.log &
sender=$!
# Mid-stream: with a third of the stream published, e2 is killed; once everything is published
# (e2's partitions still wait for its leases to expire), one NATS node is killed.
python3 nats.py "$NATS_PORT" until EVENTS $((total / 3)) || fail "the sender did not get far"
kill -9 "${ENGINE[e2]}"
unset "ENGINE[e2]"
kill -0 $sender 2>/dev/null || fail "the stream was sent before e2 was killed; the test proves little"
wait $sender || { cat send.log; fail "send --nats"; }
grep -q "sent $total events" send.log || { cat send.log; fail "not every event was sent"; }
left=$(python3 nats.py "$NATS_PORT" pending $P)
kill -9 "${NATS_PIDS[2]}" # a NATS node: its streams and buckets keep 2 of 3 copies
echo "killed engine e2 mid-stream, then NATS node n2 with $left of $total events not yet acknowledged"
[ "$left" -gt $((total / 20)) ] || fail "only $left of $total events were left at the node's kill; the test proves little"
# Each event is on the partition of its institution: FNV-1a 64 of the code mod P, computed here
# from the specification (so an outside producer agrees), with Nats-Msg-Id = event_id.
python3 nats.py "$NATS_PORT" stream EVENTS >events.jsonl
expect_eq "events in the stream" "$(wc -l <events.jsonl)" "$total"
jq -r '[.subject, .msg_id, (.data | fromjson | .event_id, .institution_id)] | @tsv' events.jsonl |
  python3 -c '
import sys
for line in sys.stdin:
    subject, msg_id, event_id, inst = line.rstrip("\n").split("\t")
    h = 14695981039346656037
    for b in inst.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    assert subject == "tw.events.%d" % (h % '$P'), (subject, inst)
    assert msg_id == event_id, (msg_id, event_id)
' || fail "an event is on the wrong partition or without its Nats-Msg-Id"
# The partition count is the stream's: a sender or an engine with another one is refused.
"$TW" send --nats "$NATS_URL" --partitions 8 e.jsonl 2>p8.log && fail "send with another P"
grep -q "partitioned 12 ways" p8.log || { cat p8.log; fail "no reason for the refused P"; }
"$TW" run --rules "$RULES" --nats "$NATS_URL" --partitions 8 --state p8 2>p8r.log &&
  fail "run with another P"
grep -q "partitioned 12 ways" p8r.log || { cat p8r.log; fail "no reason for the refused P"; }
# A second send stores nothing: the stream drops repeated Nats-Msg-Ids.
"$TW" send --nats "$NATS_URL" --partitions $P e.jsonl 2>send2.log || { cat send2.log; fail "send again"; }
grep -q "$total already in the stream" send2.log || { cat send2.log; fail "events stored twice"; }

# e1 and e3 take e2's partitions once its leases expire, and finish the stream. (Done is read
# from ALERTS: a consumer whose server was killed can leave the cluster's consumer API waiting.)
wait_for 300 "the alerts" alerts_at_least "$(wc -l <want.jsonl)"
sleep 3 # idle partitions process what waited for the watermark, and run their sweeps
stop_engine e1
stop_engine e3
grep -h "lease lost\|cannot\|made again" e1.log e3.log || true
resumed=$(cat e1.log e3.log | grep -c "resuming after stream sequence [1-9]" || true)
echo "partitions resumed after sequence 0 (from a checkpoint or a local state): $resumed"
check_alerts want.jsonl
for f in dl-*.jsonl; do [ ! -s "$f" ] || { head -3 "$f"; fail "events were dead-lettered ($f)"; }; done
echo "3 engines, 12 partitions, one engine and one NATS node killed: ALERTS holds the batch run's $(wc -l <want.jsonl) alerts, each once"
