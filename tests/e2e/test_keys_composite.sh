#!/usr/bin/env bash
# Aggregates keyed by city and province reach the shard that owns the city or province (records
# are copied to it), and alerts re-enter as `alert` events for a composite rule: 1, 2 and 4
# shards give the same alerts (ids and bytes, compared sorted), and each kind of alert fires.
. "$(dirname "$0")/lib.sh"
rules="$TW_SOURCE_DIR/tests/data/rules-keys.yaml"
"$TW" check "$rules" >/dev/null || fail "rules-keys.yaml does not pass check"
"$TW" gen --institutions 400 --days 30 --seed 5 --out e.jsonl 2>/dev/null
"$TW" run --rules "$rules" --input e.jsonl --state s1 --no-sync --alerts a1.jsonl 2>log1 \
  || { cat log1; fail "one shard failed"; }
for rule in city_complaint_wave province_payers complaint_pair big_payment runaway_risk; do
  grep -q "\"rule\":\"$rule\"" a1.jsonl || fail "no $rule alert in the reference run"
done
grep -q '"by":"city","key":"[0-9]\{4\}00"' a1.jsonl || fail "a city alert is not keyed by a city code"
grep -q '"by":"province","key":"[0-9]\{2\}0000"' a1.jsonl || fail "a province alert is not keyed by a province code"
# Every composite alert follows alerts of two distinct institution rules within 14 days.
jq -r 'select(.rule == "runaway_risk") | .institution_id' a1.jsonl | head -3 | while read -r inst; do
  n=$(jq -r --arg i "$inst" 'select(.institution_id == $i and .by == "institution_id" and .rule != "runaway_risk") | .rule' a1.jsonl | sort -u | wc -l)
  [ "$n" -ge 2 ] || fail "runaway_risk for $inst without two distinct institution warnings"
done
sort a1.jsonl > ref.sorted
for n in 2 4; do
  # province_payers_7d goes past 256 students (an estimate of the pseudonyms' hashes): the
  # states compared share s1's pseudonym key, as one state's shards do.
  mkdir -m 700 "s$n" && cp -p s1/pseudonym.key "s$n/"
  "$TW" run --rules "$rules" --input e.jsonl --state "s$n" --shards "$n" --no-sync \
    --alerts "a$n.jsonl" 2>"log$n" || { cat "log$n"; fail "--shards $n failed"; }
  sort "a$n.jsonl" | cmp -s - ref.sorted || {
    diff <(sort "a$n.jsonl") ref.sorted | head -5
    fail "--shards $n: alerts differ from one shard"
  }
  # Secondary copies are neither counted twice nor dead-lettered twice.
  grep -o '[0-9]* events read, [0-9]* accepted, [0-9]* rejected' "log$n" \
    | cmp -s - <(grep -o '[0-9]* events read, [0-9]* accepted, [0-9]* rejected' log1) \
    || fail "--shards $n: counts differ from one shard"
done
# Alert events are the engine's own: one in the input is dead-lettered as reserved_type.
printf '%s\n' '{"event_id":"x-1","type":"alert","ts":"2025-03-01T10:00:00+08:00","institution_id":"52440106MJL17630G2","region":"440106","rule":"big_payment","severity":"high"}' > fake.jsonl
"$TW" run --rules "$rules" --input fake.jsonl --dead-letter dl.jsonl --no-sync --alerts fa.jsonl 2>/dev/null
grep -q '"reason":"reserved_type"' dl.jsonl || fail "an alert event in the input was not refused"
[ ! -s fa.jsonl ] || fail "an alert event in the input raised alerts"
echo ok
