#!/usr/bin/env bash
# Alert lifecycle over the control endpoint, with keys: a regulator follows up its region's
# alerts (ack → assign → resolve, with comments), is refused outside its region and for
# transitions the state does not allow; a snooze keeps an institution's alerts of one rule off
# the feeds (still journaled); an open alert nobody acknowledges escalates to the city (an alert
# on the regulator feed); every step is in the hash-chained audit log, `audit verify` passes, and
# after one byte of a record is changed on disk it names that record.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/feeds_lib.sh"
sample_institutions
read -r A ra < <(inst_in 4401 1)
read -r B rb < <(inst_in 4401 2)
read -r C rc < <(inst_in 4403 1)
[ "${ra:4:2}" != "00" ] || fail "institution A is not in a county"
for k in engine gz sz ops; do "$TW" keys gen $k 2>/dev/null; done
cat > keys.yaml <<YAML
clients:
  - {name: gz-bureau, public_key: "$(cat gz.pub)", role: regulator, scope: "4401"}
  - {name: sz-bureau, public_key: "$(cat sz.pub)", role: regulator, scope: "4403"}
  - {name: ops, public_key: "$(cat ops.pub)", role: operator}
YAML
ports 3
IN="tcp://127.0.0.1:$P1" FEED="tcp://127.0.0.1:$P2" CTL="tcp://127.0.0.1:$P3"
start_engine engine.log --listen "$IN" --feed "$FEED" --control "$CTL" --escalation high=3s \
  --keys keys.yaml --server-key engine.key --state live --feed-format json
trap 'kill $engine $sub 2>/dev/null || true' EXIT
K="--server-pub engine.pub"
"$TW" feed --connect "$FEED" --key ops.key $K --timeout-ms 9000 > feed.jsonl 2>feed.err &
sub=$!
sleep 1
{ over_cap a1 "$A" "$ra" 2; over_cap b1 "$B" "$rb" 2; over_cap c1 "$C" "$rc" 2; } > ev1.jsonl
"$TW" send --connect "$IN" --key ops.key $K ev1.jsonl 2>/dev/null || fail "send"
for _ in $(seq 1 50); do
  [ "$("$TW" alerts --connect "$CTL" --key ops.key $K list 2>/dev/null | wc -l)" = 3 ] && break
  sleep 0.2
done
gz() { "$TW" alerts --connect "$CTL" --key gz.key $K "$@"; }
gz list > gz_list.jsonl || fail "gz list"
expect_eq "gz sees its region" "$(jq -r .institution_id gz_list.jsonl | sort | tr '\n' ' ')" \
  "$(printf '%s\n' "$A" "$B" | sort | tr '\n' ' ')"
if gz list --prefix 44 2>err.txt; then fail "gz listed the province"; fi
grep -q "outside your scope" err.txt || { cat err.txt; fail "no scope refusal for list"; }
id_a=$(jq -r "select(.institution_id == \"$A\") | .alert_id" gz_list.jsonl)
id_b=$(jq -r "select(.institution_id == \"$B\") | .alert_id" gz_list.jsonl)
id_c=$("$TW" alerts --connect "$CTL" --key sz.key $K list | jq -r .alert_id)
gz ack "$id_b" --comment "calling the institution" > /dev/null || fail "ack"
gz assign "$id_b" --to li.wei > /dev/null || fail "assign"
gz resolve "$id_b" --comment "refunds agreed" > b.json || fail "resolve"
expect_eq "B resolved" "$(jq -r .state b.json)" resolved
expect_eq "B assignee" "$(jq -r .assignee b.json)" li.wei
expect_eq "B comments" "$(jq -r '[.comments[].by] | join(",")' b.json)" "gz-bureau,gz-bureau"
if gz ack "$id_c" 2>err.txt; then fail "gz acknowledged an alert of 4403"; fi
grep -q "outside your scope" err.txt || { cat err.txt; fail "no scope refusal for ack"; }
if gz resolve "$id_a" 2>err.txt; then fail "an open alert was resolved without acknowledgement"; fi
grep -q "resolve is not allowed for an alert that is open" err.txt || { cat err.txt; fail "unclear state error"; }
"$TW" alerts --connect "$CTL" --key sz.key $K dismiss "$id_c" --reason "duplicate report" >/dev/null \
  || fail "sz dismiss"
# Snooze C's prepaid_over_cap for an hour: its next alert is journaled, not pushed.
"$TW" alerts --connect "$CTL" --key sz.key $K snooze --rule prepaid_over_cap --institution "$C" \
  --until 1h --reason "refund plan agreed with the bureau" > /dev/null || fail "snooze"
over_cap c2 "$C" "$rc" 3 > ev2.jsonl
"$TW" send --connect "$IN" --key ops.key $K ev2.jsonl 2>/dev/null || fail "send c2"
# A snooze expires by itself: B's next alert inside 2 s is kept off the feed, the one after is not.
"$TW" alerts --connect "$CTL" --key gz.key $K snooze --rule prepaid_over_cap --institution "$B" \
  --until 2s --reason "short pause" > /dev/null || fail "short snooze"
over_cap b2 "$B" "$rb" 4 | "$TW" send --connect "$IN" --key ops.key $K - 2>/dev/null || fail "send b2"
sleep 2.5
over_cap b3 "$B" "$rb" 5 | "$TW" send --connect "$IN" --key ops.key $K - 2>/dev/null || fail "send b3"
# A stays open: after 3 s it escalates to its city.
city="${ra:0:4}00"
for _ in $(seq 1 100); do
  grep -q '"rule":"escalation"' feed.jsonl 2>/dev/null && break
  sleep 0.1
done
sleep 0.5
stop_engine engine.log
kill $sub 2>/dev/null || true
trap - EXIT
esc=$(jq -c 'select(.rule == "escalation")' feed.jsonl)
[ -n "$esc" ] || { cat engine.log; fail "no escalation on the feed"; }
expect_eq "escalated to the city" "$(echo "$esc" | jq -r .region | head -1)" "$city"
echo "$esc" | head -1 | jq -e --arg a "$id_a" '.event_ids[0] == $a' >/dev/null || fail "escalation does not name A"
echo "$esc" | jq -e --arg b "$id_b" '.event_ids[0] == $b' >/dev/null && fail "acknowledged B escalated"
"$TW" journal --state live | jq -r '.event_ids[0]' | grep -qx c2 || fail "the snoozed alert is not journaled"
jq -r '.event_ids[0]' feed.jsonl | grep -qx c2 && fail "the snoozed alert was pushed to the feed"
jq -r '.event_ids[0]' feed.jsonl | grep -qx b2 && fail "B's alert during its snooze was pushed"
for _ in $(seq 1 30); do jq -r '.event_ids[0]' feed.jsonl | grep -qx b3 && break; sleep 0.1; done
jq -r '.event_ids[0]' feed.jsonl | grep -qx b3 || fail "the snooze did not expire"

"$TW" audit verify --state live > verify.txt || { cat verify.txt; fail "audit verify failed on an intact log"; }
grep -q "chain intact" verify.txt || fail "no verdict"
# Change one byte of the resolve record (record 6: three alerts, ack, assign, resolve) on disk.
perl -0777 -pi -e 's/refunds agreed/refunds agreeD/g' live/lifecycle/data.mdb
if "$TW" audit verify --state live > verify2.txt; then cat verify2.txt; fail "a tampered log verified"; fi
grep -q "BROKEN at record 6: its content does not match its hash" verify2.txt \
  || { cat verify2.txt; fail "audit verify did not name record 6"; }
if "$TW" audit verify --state nowhere 2>/dev/null; then fail "verify of a missing state succeeded"; fi
echo "lifecycle, scopes, snooze, escalation and a tamper-evident audit log"
