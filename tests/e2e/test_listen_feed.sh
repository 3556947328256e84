#!/usr/bin/env bash
# run --listen + send + feed --topic 44: the regulator feed (XPUB, msgpack payloads) delivers the
# alerts of region 44xxxx and nothing else, the same alerts a file run gives; SIGTERM shuts the engine down cleanly.
. "$(dirname "$0")/lib.sh"
"$TW" gen --institutions 300 --days 40 --seed 11 --out e.jsonl --truth truth.jsonl
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts ref.jsonl 2>/dev/null
jq -c 'select(.region | startswith("44"))' ref.jsonl > want44.jsonl
n44=$(wc -l < want44.jsonl)
[ "$n44" -gt 0 ] || fail "the sample has no alerts in region 44; cannot test the feed"
[ "$(wc -l < ref.jsonl)" -gt "$n44" ] || fail "the sample has no alerts outside region 44"

p_in=$(free_port)
p_feed=$(free_port)
while [ "$p_feed" = "$p_in" ]; do p_feed=$(free_port); done
"$TW" run --rules "$RULES" --listen "tcp://127.0.0.1:$p_in" --feed "tcp://127.0.0.1:$p_feed" \
  --state live --no-sync 2>engine.log &
engine=$!
trap 'kill $engine 2>/dev/null || true' EXIT
"$TW" feed --connect "tcp://127.0.0.1:$p_feed" --topic 44 --count "$n44" --timeout-ms 20000 \
  > got44.jsonl 2>feed.log &
feed=$!
sleep 1 # the SUB socket must be subscribed before alerts are published (PUB drops otherwise)
"$TW" send --connect "tcp://127.0.0.1:$p_in" e.jsonl 2>send.log || { cat send.log; fail "send failed"; }
wait $feed || { cat feed.log engine.log; fail "feed did not receive $n44 alerts"; }
kill -TERM $engine
wait $engine || { cat engine.log; fail "engine did not exit 0 on SIGTERM"; }
trap - EXIT
cat engine.log
# The feed adds its sequence number ("seq", 1, 2, ... as first key) and encodes in msgpack by
# default; printed back as JSON, each alert is otherwise the file run's.
jq -c 'del(.seq)' got44.jsonl > got44.noseq.jsonl
jq -c . want44.jsonl > want44.norm.jsonl
diff -u want44.norm.jsonl got44.noseq.jsonl || fail "feed alerts differ from the file run's region-44 alerts"
[ "$(jq -r .seq got44.jsonl | sort -n | uniq | wc -l)" = "$n44" ] || fail "feed sequence numbers repeat"
grep -q "SIGTERM" engine.log || fail "engine did not report the shutdown"
grep -q "events read" engine.log || fail "engine printed no summary"
echo "feed --topic 44 delivered exactly the $n44 region-44 alerts"
