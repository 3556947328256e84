#!/usr/bin/env bash
# Acknowledged ingest: `send --acked` to `run --ingest`. The engine is killed (-9) while the
# sender is mid-stream and restarted on the same state; the sender sends the unacknowledged
# batches again and finishes; the alert journal equals an uninterrupted run's, each alert once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/feeds_lib.sh"
"$TW" gen --institutions 150 --days 30 --seed 21 --out e.jsonl 2>/dev/null
total=$(wc -l < e.jsonl)
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --allowed-lateness 0s \
  --alerts /dev/null 2>/dev/null
"$TW" journal --state ref 2>/dev/null | jq -c 'del(.seq)' > want.jsonl
[ -s want.jsonl ] || fail "the reference run raised no alert"

ports 1
IN="tcp://127.0.0.1:$P1"
start_engine engine1.log --ingest "$IN" --state live --alerts /dev/null
grep -q "ROUTER, acknowledged" engine1.log || { cat engine1.log; fail "no acknowledged endpoint"; }
trap 'kill -9 $engine $sender 2>/dev/null || true' EXIT
# Small batches, one in flight: every batch waits for its group commit (the engine commits when
# its input goes idle, so an acknowledgement takes one commit, a few ms with fsync): the sender
# is busy for about 940 commits, and the engine is killed at its first alert (event 11,498 of
# 23,537).
"$TW" send --acked --connect "$IN" --batch 25 --window 1 --timeout-ms 30000 e.jsonl 2>send.log &
sender=$!
for _ in $(seq 1 400); do # bounded: until the engine has committed an alert
  grep -q . <("$TW" journal --state live 2>/dev/null) && break
  sleep 0.02
done
kill -9 $engine
wait $engine 2>/dev/null || true
kill -0 $sender 2>/dev/null || { cat send.log; fail "the sender finished before the kill; the test proves nothing"; }
sleep 1 # the sender notices the engine is gone
start_engine engine2.log --ingest "$IN" --state live --alerts /dev/null
wait $sender || { cat send.log engine2.log; fail "send --acked did not finish after the restart"; }
stop_engine engine2.log
trap - EXIT
cat send.log
grep -q "sent $total events" send.log || fail "not every event was sent"
again=$(sed -n 's/.* \([0-9][0-9]*\) sent again.*/\1/p' send.log)
[ "${again:-0}" -gt 0 ] || fail "no batch was sent again after the kill"
"$TW" journal --state live 2>/dev/null | jq -c 'del(.seq)' > got.jsonl
diff -u want.jsonl got.jsonl || fail "the journal differs from the uninterrupted run"
expect_eq "each alert once" "$(jq -r .alert_id got.jsonl | sort -u | wc -l)" "$(wc -l < got.jsonl)"
echo "killed and restarted under send --acked: journal equals the uninterrupted run"
