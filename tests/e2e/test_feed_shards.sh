#!/usr/bin/env bash
# With --shards the feed sequence is one numbering for the whole engine: each shard journals in
# its own numbering, the feeds number every alert once (1..N, no gap, no repeat), and history from
# 0 holds exactly the alerts of all the shards' journals.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/feeds_lib.sh"
sample_institutions
n=0
while read -r code region; do
  n=$((n + 1))
  over_cap "p$n" "$code" "$region" $((1 + n / 2)) # in event-time order
  [ $n -ge 40 ] && break
done < insts.txt > ev.jsonl
ports 3
IN="tcp://127.0.0.1:$P1" FEED="tcp://127.0.0.1:$P2" HIST="tcp://127.0.0.1:$P3"
start_engine engine.log --listen "$IN" --feed "$FEED" --history "$HIST" --shards 2 --state live
trap 'kill $engine 2>/dev/null || true' EXIT
"$TW" send --connect "$IN" ev.jsonl 2>/dev/null || fail "send"
for _ in $(seq 1 100); do
  [ "$("$TW" journal --state live 2>/dev/null | wc -l)" -ge 40 ] && break
  sleep 0.1
done
sleep 0.5
"$TW" feed --connect "$FEED" --since 0 --history "$HIST" --count 40 --timeout-ms 3000 > all.jsonl \
  2>feed.err || { cat feed.err; fail "history"; }
stop_engine engine.log
trap - EXIT
"$TW" journal --state live > journal.jsonl
expect_eq "shards used" "$(jq -r .shard journal.jsonl | sort -u | wc -l)" 2
expect_eq "feed sequence" "$(jq -r .seq all.jsonl | tr '\n' ' ')" "$(seq 1 40 | tr '\n' ' ')"
diff <(jq -c 'del(.seq, .shard)' journal.jsonl | sort) <(jq -c 'del(.seq)' all.jsonl | sort) \
  || fail "history differs from the shards' journals"
echo "one feed sequence over two shards"
