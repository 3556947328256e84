#!/usr/bin/env bash
# History and `feed --since`: a subscriber that was away catches up from the history endpoint
# and then follows live with no gap and no duplicate, even when alerts are published while it
# is switching from history to live; feed sequence numbers continue across an engine restart;
# what the feeds carried equals the alert journal.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/feeds_lib.sh"
sample_institutions
read -r A ra < <(inst_in 4401 1)
read -r B rb < <(inst_in 4403 1)
read -r C rc < <(inst_in 3101 1)
batch() { # batch N: three alerts, one per institution, on day N
  over_cap "a$1" "$A" "$ra" "$1"
  over_cap "b$1" "$B" "$rb" "$1"
  over_cap "c$1" "$C" "$rc" "$1"
}
for n in 1 2 3 4 5; do batch $n > b$n.jsonl; done
ports 3
IN="tcp://127.0.0.1:$P1" FEED="tcp://127.0.0.1:$P2" HIST="tcp://127.0.0.1:$P3"
start_engine engine.log --listen "$IN" --feed "$FEED" --history "$HIST" --state live
trap 'kill $engine 2>/dev/null || true' EXIT

# 1. A live subscriber sees batch 1 (sequences 1-3), then goes away.
"$TW" feed --connect "$FEED" --count 3 --timeout-ms 10000 > live1.jsonl 2>live1.err &
sub=$!
sleep 1
"$TW" send --connect "$IN" b1.jsonl 2>/dev/null || fail "send b1"
wait $sub || { cat live1.err; fail "live subscriber did not get batch 1"; }
expect_eq "live sequences" "$(jq -r .seq live1.jsonl | tr '\n' ' ')" "1 2 3 "

# 2. While it is away, batch 2 (4-6) is published to nobody.
"$TW" send --connect "$IN" b2.jsonl 2>/dev/null || fail "send b2"
for _ in $(seq 1 50); do
  "$TW" journal --state live 2>/dev/null | grep -q '"a2"' && break
  sleep 0.2
done
sleep 0.5

# 3. It comes back with --since 3 while batch 3 (7-9) is being sent: history, then live.
"$TW" feed --connect "$FEED" --since 3 --history "$HIST" --count 6 --timeout-ms 10000 \
  > back.jsonl 2>back.err &
sub=$!
"$TW" send --connect "$IN" b3.jsonl 2>/dev/null || fail "send b3"
wait $sub || { cat back.err engine.log; fail "the returning subscriber did not get 6 alerts"; }
expect_eq "caught-up sequences" "$(jq -r .seq back.jsonl | tr '\n' ' ')" "4 5 6 7 8 9 "
expect_eq "caught-up events" "$(jq -r '.event_ids[0]' back.jsonl | sort | tr '\n' ' ')" \
  "a2 a3 b2 b3 c2 c3 "

# 4. A prefix subscriber catching up gets only its prefix, merged across two prefixes.
"$TW" feed --connect "$FEED" --topic 4401 --topic 3101 --since 0 --history "$HIST" --count 6 \
  --timeout-ms 3000 > two.jsonl 2>two.err || { cat two.err; fail "two-prefix catch-up"; }
expect_eq "two prefixes" "$(jq -r '.event_ids[0]' two.jsonl | tr '\n' ' ')" "a1 c1 a2 c2 a3 c3 "

# 5. Restart: sequences continue; nothing is stored or published twice.
stop_engine engine.log
start_engine engine2.log --listen "$IN" --feed "$FEED" --history "$HIST" --state live
"$TW" feed --connect "$FEED" --since 9 --history "$HIST" --count 3 --timeout-ms 10000 \
  > after.jsonl 2>after.err &
sub=$!
sleep 0.5
"$TW" send --connect "$IN" b4.jsonl 2>/dev/null || fail "send b4"
wait $sub || { cat after.err engine2.log; fail "no alerts after the restart"; }
expect_eq "sequences after restart" "$(jq -r .seq after.jsonl | tr '\n' ' ')" "10 11 12 "
"$TW" feed --connect "$FEED" --since 0 --history "$HIST" --count 12 --timeout-ms 2000 \
  > all.jsonl 2>/dev/null || fail "full history"
stop_engine engine2.log
trap - EXIT
expect_eq "history holds each alert once" "$(jq -r .alert_id all.jsonl | sort -u | wc -l)" 12
"$TW" journal --state live > journal.jsonl 2>/dev/null
diff <(jq -c 'del(.seq)' journal.jsonl | sort) <(jq -c 'del(.seq)' all.jsonl | sort) \
  || fail "history differs from the alert journal"

# Usage: --since needs --history.
if "$TW" feed --connect "$FEED" --since 3 2>/dev/null; then fail "--since without --history"; fi
echo "history catch-up and live hand-over: no gap, no duplicate; sequences survive a restart"
