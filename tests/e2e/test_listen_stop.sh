#!/usr/bin/env bash
# SIGTERM stops a serving engine promptly even while a sender keeps it busy: it finishes the
# batch in hand, commits, prints its summary and exits 0; events still queued in ZeroMQ are not
# taken (a later acknowledged-ingest protocol resends them).
. "$(dirname "$0")/lib.sh"
"$TW" gen --institutions 1500 --days 60 --seed 2 --format msgpack --out e.msgpack 2>/dev/null
p_in=$(free_port)
"$TW" run --rules "$RULES" --listen "tcp://127.0.0.1:$p_in" --state live --no-sync \
  --alerts alerts.jsonl 2>engine.log &
engine=$!
"$TW" send --connect "tcp://127.0.0.1:$p_in" --timeout-ms 3000 e.msgpack 2>send.log &
sender=$!
trap 'kill -9 $engine $sender 2>/dev/null || true' EXIT
sleep 0.5 # the sender is still pushing: stop the engine mid-stream
kill -TERM $engine
stopped=0
for _ in $(seq 1 100); do # bounded wait: 10 s
  if ! kill -0 $engine 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
[ $stopped = 1 ] || { cat engine.log; fail "engine still running 10 s after SIGTERM while busy"; }
wait $engine || { cat engine.log; fail "engine did not exit 0 on SIGTERM"; }
wait $sender 2>/dev/null || true
trap - EXIT
grep -q "SIGTERM received" engine.log || fail "engine did not report the signal"
grep -q "events read" engine.log || fail "engine printed no summary"
echo "SIGTERM under load: stopped promptly"
cat engine.log
