#!/usr/bin/env bash
# Keys and authorisation on the feeds and history (issue 5): with --keys every endpoint is CURVE
# with a ZAP handler; a regulator of 4401 receives 4401 and nothing wider; subscriptions outside
# a key's scope (a shorter prefix, the empty prefix, another city, another institution's code)
# are refused and logged with the key's name and receive nothing; an unknown key, a client with
# no key and a client that trusts the wrong server key receive nothing; history applies the same
# scopes. Case 012 (institution subscribing empty or too short) is test_case012_selfcheck.sh.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/feeds_lib.sh"
sample_institutions
read -r A ra < <(inst_in 4401 1)
read -r B rb < <(inst_in 4401 2)
read -r C rc < <(inst_in 4403 1)
read -r D rd < <(inst_in 3101 1)
[ -n "$A" ] && [ -n "$B" ] && [ -n "$C" ] && [ -n "$D" ] || fail "sample lacks institutions"
{ over_cap a1 "$A" "$ra" 2; over_cap b1 "$B" "$rb" 2; over_cap c1 "$C" "$rc" 2; over_cap d1 "$D" "$rd" 2; } > ev.jsonl

for k in engine gz gd inst ops stranger other; do "$TW" keys gen $k 2>/dev/null || fail "keys gen $k"; done
cat > keys.yaml <<YAML
clients:
  - {name: gz-bureau, public_key: "$(cat gz.pub)", role: regulator, scope: "4401"}
  - {name: gd-bureau, public_key: "$(cat gd.pub)", role: regulator, scope: "44"}
  - {name: inst-a, public_key: "$(cat inst.pub)", role: institution, scope: "$A"}
  - {name: ops, public_key: "$(cat ops.pub)", role: operator}
YAML
ports 4
start_engine engine.log --listen "tcp://127.0.0.1:$P1" --feed "tcp://127.0.0.1:$P2" \
  --history "tcp://127.0.0.1:$P3" --self-check-feed "tcp://127.0.0.1:$P4" \
  --keys keys.yaml --server-key engine.key --state live
trap 'kill $engine 2>/dev/null || true' EXIT
grep -q "every endpoint uses CURVE" engine.log || { cat engine.log; fail "no note that keys are in use"; }

FEED="tcp://127.0.0.1:$P2"
sub() { # sub OUT KEY ARGS...: a regulator-feed subscriber in the background
  local out=$1 key=$2
  shift 2
  "$TW" feed --connect "$FEED" --key "$key.key" --server-pub engine.pub --timeout-ms 4000 "$@" \
    > "$out.jsonl" 2> "$out.err" &
}
sub gz_4401 gz --topic 4401
sub gz_44 gz --topic 44
sub gz_all gz
sub gz_4403 gz --topic 4403
sub gd_44 gd --topic 44
sub stranger stranger --topic 4401
sub inst_reg inst --topic 4401
"$TW" feed --connect "$FEED" --topic 4401 --timeout-ms 4000 > nokey.jsonl 2> nokey.err &
"$TW" feed --connect "$FEED" --topic 4401 --key gz.key --server-pub other.pub --timeout-ms 4000 \
  > wrongserver.jsonl 2> wrongserver.err &
sleep 1.5 # subscriptions reach the engine before the alerts
"$TW" send --connect "tcp://127.0.0.1:$P1" --key ops.key --server-pub engine.pub ev.jsonl 2>send.log \
  || { cat send.log engine.log; fail "send with the operator's key failed"; }
# A regulator's key may not send events: the engine admits only operators on ingest.
if "$TW" send --connect "tcp://127.0.0.1:$P1" --key gz.key --server-pub engine.pub \
  --timeout-ms 1000 ev.jsonl 2>send_gz.log; then
  fail "a regulator's key could send events"
fi
wait $(jobs -p | grep -v "^$engine$") 2>/dev/null || true

regions() { jq -r .region "$1" | cut -c1-4 | sort | tr '\n' ' '; }
expect_eq "gz 4401" "$(jq -r .institution_id gz_4401.jsonl | sort | tr '\n' ' ')" "$(printf '%s\n' "$A" "$B" | sort | tr '\n' ' ')"
expect_eq "gd 44 regions" "$(regions gd_44.jsonl)" "4401 4401 4403 "
for f in gz_44 gz_all gz_4403 stranger inst_reg nokey wrongserver; do
  [ ! -s $f.jsonl ] || { cat $f.jsonl; fail "$f received alerts outside its scope"; }
done
grep -q "refused subscription '44' from 'gz-bureau' (regulator 4401): outside its scope" engine.log \
  || { cat engine.log; fail "the shorter prefix was not refused and logged"; }
grep -q "refused subscription '' from 'gz-bureau'" engine.log || fail "the empty prefix was not refused"
grep -q "refused subscription '4403' from 'gz-bureau'" engine.log || fail "another city was not refused"
grep -q "unknown key" engine.log || fail "the unknown key was not logged"
grep -q "refused 'inst-a' (institution) on the feed endpoint" engine.log \
  || fail "an institution's key was admitted to the regulator feed"
grep -q "refused 'gz-bureau' (regulator) on the ingest endpoint" engine.log \
  || fail "a regulator's key was admitted to ingest"

# History: the same scopes.
HIST="tcp://127.0.0.1:$P3"
"$TW" feed --connect "$FEED" --key gz.key --server-pub engine.pub --topic 4401 --since 0 \
  --history "$HIST" --timeout-ms 500 > h_gz.jsonl 2> h_gz.err || { cat h_gz.err; fail "history 4401 for gz"; }
expect_eq "history gz 4401" "$(jq -r .institution_id h_gz.jsonl | sort | tr '\n' ' ')" "$(printf '%s\n' "$A" "$B" | sort | tr '\n' ' ')"
for pfx in 44 4403 ""; do
  if "$TW" feed --connect "$FEED" --key gz.key --server-pub engine.pub --topic "$pfx" --since 0 \
    --history "$HIST" --timeout-ms 500 > h_bad.jsonl 2> h_bad.err; then
    fail "history prefix '$pfx' was served to a 4401 regulator"
  fi
  [ ! -s h_bad.jsonl ] || fail "history prefix '$pfx' printed alerts"
  grep -q "outside your scope" h_bad.err || { cat h_bad.err; fail "no refusal for history '$pfx'"; }
done
grep -q "history: refused prefix '44' (feed) to 'gz-bureau'" engine.log || fail "history refusal not logged"
"$TW" feed --connect "$FEED" --key ops.key --server-pub engine.pub --since 0 \
  --history "$HIST" --timeout-ms 500 > h_ops.jsonl 2>/dev/null || fail "operator history"
expect_eq "operator history" "$(wc -l < h_ops.jsonl)" 4
stop_engine engine.log
trap - EXIT

# Without --keys, an endpoint reachable from other hosts is refused at start.
if "$TW" run --rules "$RULES" --listen "tcp://0.0.0.0:$P1" --state s2 2> open.err; then
  fail "an unauthenticated engine bound 0.0.0.0"
fi
grep -q "must be loopback" open.err || { cat open.err; fail "no reason for refusing 0.0.0.0"; }
# A keys file with a mistake is refused with its location.
printf 'clients:\n  - {name: x, public_key: "%s", role: regulator, scope: "4"}\n' "$(cat gz.pub)" > bad.yaml
if "$TW" run --rules "$RULES" --listen "tcp://127.0.0.1:$P1" --keys bad.yaml --server-key engine.key \
  --state s3 2> bad.err; then
  fail "a regulator scope of one digit was accepted"
fi
grep -q "bad.yaml:2: regulator 'x' needs a scope of 2, 4 or 6 digits" bad.err || { cat bad.err; fail "unclear keys file error"; }
echo "scopes enforced on feeds, history and ingest"
