#!/usr/bin/env bash
# Case 012 and the self-check feed. A PUB/SUB subscription is a byte prefix, so without checks
# an empty subscription receives everything and an institution subscribing to a short prefix of
# its code receives its neighbours' alerts. With keys, a scoped subscriber's empty or too-short
# subscription (or another institution's code) is refused and logged, and it receives nothing
# outside its scope; its own full code brings its own alerts, in the self-check view: no "key" or
# "by", no string values, and phone or id numbers and other institutions' codes masked in the
# message, which the regulator feed carries in full.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/feeds_lib.sh"
sample_institutions
read -r A ra < <(inst_in 4401 1)
read -r B rb < <(inst_in 4401 2)
[ -n "$A" ] && [ -n "$B" ] || fail "sample lacks institutions"
# A and B share their first characters (same category and region), so a short prefix of A's
# code would match B's too.
short=${A:0:8}
[ "${B:0:8}" = "$short" ] || short=${A:0:2}
[ "${B:0:${#short}}" = "$short" ] || fail "no common prefix between $A and $B"
{
  over_cap a1 "$A" "$ra" 2
  over_cap b1 "$B" "$rb" 2
  printf '{"event_id":"k1","type":"complaint","ts":"2025-06-02T11:00:00+08:00","institution_id":"%s","region":"%s","complaint_id":"K-13812345678","category":"refund","text":"老板跑路了，电话 13812345678"}\n' "$A" "$ra"
} > ev.jsonl

for k in engine inst ops; do "$TW" keys gen $k 2>/dev/null || fail "keys gen $k"; done
cat > keys.yaml <<YAML
clients:
  - {name: inst-a, public_key: "$(cat inst.pub)", role: institution, scope: "$A"}
  - {name: ops, public_key: "$(cat ops.pub)", role: operator}
YAML
ports 4
start_engine engine.log --listen "tcp://127.0.0.1:$P1" --feed "tcp://127.0.0.1:$P2" \
  --self-check-feed "tcp://127.0.0.1:$P3" --history "tcp://127.0.0.1:$P4" --keys keys.yaml \
  --server-key engine.key --state live --feed-format json
trap 'kill $engine 2>/dev/null || true' EXIT
SELF="tcp://127.0.0.1:$P3"
selfsub() { # selfsub OUT ARGS...
  local out=$1
  shift
  "$TW" feed --connect "$SELF" --key inst.key --server-pub engine.pub --timeout-ms 4000 "$@" \
    > "$out.jsonl" 2> "$out.err" &
}
selfsub empty
selfsub short --topic "$short"
selfsub other --topic "$B"
selfsub own --topic "$A"
"$TW" feed --connect "tcp://127.0.0.1:$P2" --key ops.key --server-pub engine.pub --topic 4401 \
  --timeout-ms 4000 > regulator.jsonl 2>/dev/null &
sleep 1.5
"$TW" send --connect "tcp://127.0.0.1:$P1" --key ops.key --server-pub engine.pub ev.jsonl 2>send.log \
  || { cat send.log; fail "send failed"; }
wait $(jobs -p | grep -v "^$engine$") 2>/dev/null || true
# History: its own code only, in the self-check view.
"$TW" feed --connect "$SELF" --key inst.key --server-pub engine.pub --topic "$A" --since 0 \
  --history "tcp://127.0.0.1:$P4" --timeout-ms 500 > own_hist.jsonl 2>own_hist.err \
  || { cat own_hist.err; fail "institution history of its own code"; }
for t in "$B" "$short"; do
  if "$TW" feed --connect "$SELF" --key inst.key --server-pub engine.pub --topic "$t" --since 0 \
    --history "tcp://127.0.0.1:$P4" --timeout-ms 500 > bad_hist.jsonl 2>/dev/null; then
    fail "history of '$t' was served to inst-a"
  fi
  [ ! -s bad_hist.jsonl ] || fail "history of '$t' printed alerts"
done
stop_engine engine.log
trap - EXIT

for f in empty short other; do
  [ ! -s $f.jsonl ] || { cat $f.jsonl; fail "subscription '$f' received alerts outside its scope"; }
done
grep -q "self-check feed: refused subscription '' from 'inst-a' (institution $A): outside its scope" engine.log \
  || { cat engine.log; fail "the empty subscription was not refused and logged"; }
grep -q "refused subscription '$short' from 'inst-a'" engine.log || fail "the short prefix was not refused"
grep -q "refused subscription '$B' from 'inst-a'" engine.log || fail "another code was not refused"

expect_eq "own alerts" "$(wc -l < own.jsonl)" 2
diff own.jsonl own_hist.jsonl || fail "history differs from the live self-check view"
expect_eq "only its own code" "$(jq -r .institution_id own.jsonl | sort -u)" "$A"
jq -e 'has("key") or has("by")' own.jsonl >/dev/null && fail "the self-check view shows key or by"
msg=$(jq -r 'select(.rule == "complaint_runaway_words") | .message' own.jsonl)
case "$msg" in
  *13812345678*) fail "the phone number reached the self-check feed: $msg" ;;
  *"K-138******78"*) ;;
  *) fail "unexpected masked message: $msg" ;;
esac
jq -e 'select(.rule == "complaint_runaway_words") | .message | contains("13812345678")' regulator.jsonl \
  >/dev/null || fail "the regulator feed should carry the message in full"
echo "case 012: empty, short and foreign subscriptions refused and logged; self-check view masked"
