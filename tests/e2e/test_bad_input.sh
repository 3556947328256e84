#!/usr/bin/env bash
# A file mixing good events with broken lines gives alerts for the good ones and exactly one
# dead-letter line per bad one, with the reason and the input position; the run exits 0.
. "$(dirname "$0")/lib.sh"
g="$TW_SOURCE_DIR/tests/golden/basic/events.jsonl"
good_inst=52440106MJL176301K
{
  head -n 5 "$g"
  echo '{"event_id":"bad-json","type":"payment", this is not json'
  echo '{"event_id":"bad-type","type":"payment","ts":"2025-03-05T10:00:00+08:00","institution_id":"'$good_inst'","region":"440106","student_id":"S1","course_id":"C","amount_fen":"600000","class_hours":2,"service_days":30,"channel":"supervised"}'
  echo '{"event_id":"bad-float","type":"payment","ts":"2025-03-05T10:00:00+08:00","institution_id":"'$good_inst'","region":"440106","student_id":"S1","course_id":"C","amount_fen":6.0E5,"class_hours":2,"service_days":30,"channel":"supervised"}'
  echo '{"event_id":"bad-missing","type":"payment","institution_id":"'$good_inst'","region":"440106","student_id":"S1","course_id":"C","amount_fen":600000,"class_hours":2,"service_days":30,"channel":"supervised"}'
  echo '{"event_id":"bad-code","type":"payment","ts":"2025-03-05T10:00:00+08:00","institution_id":"52440106MJL176301A","region":"440106","student_id":"S1","course_id":"C","amount_fen":600000,"class_hours":2,"service_days":30,"channel":"supervised"}'
  echo '{"event_id":"bad-code17","type":"payment","ts":"2025-03-05T10:00:00+08:00","institution_id":"52440106MJL17630G","region":"440106","student_id":"S1","course_id":"C","amount_fen":600000,"class_hours":2,"service_days":30,"channel":"supervised"}'
  echo '{"event_id":"bad-region","type":"payment","ts":"2025-03-05T10:00:00+08:00","institution_id":"'$good_inst'","region":"4401","student_id":"S1","course_id":"C","amount_fen":600000,"class_hours":2,"service_days":30,"channel":"supervised"}'
  echo '{"event_id":"bad-enum","type":"payment","ts":"2025-03-05T10:00:00+08:00","institution_id":"'$good_inst'","region":"440106","student_id":"S1","course_id":"C","amount_fen":600000,"class_hours":2,"service_days":30,"channel":"cash"}'
  echo '{"event_id":"bad-type-name","type":"payout","ts":"2025-03-05T10:00:00+08:00","institution_id":"'$good_inst'","region":"440106"}'
  printf '{"event_id":"bad-huge","type":"complaint","ts":"2025-03-05T10:00:00+08:00","institution_id":"%s","region":"440106","complaint_id":"K","category":"x","text":"' "$good_inst"
  head -c 10000000 /dev/zero | tr '\0' 'a'
  echo '"}'
  tail -n +6 "$g"
} > mixed.jsonl
bad=10
"$TW" run --rules "$RULES" --input mixed.jsonl --state st --alerts alerts.jsonl \
  --dead-letter dl.jsonl 2>log.txt || { cat log.txt; fail "run failed on bad input"; }
cat log.txt
expect_eq "dead-letter lines" "$(wc -l < dl.jsonl)" "$bad"
diff -u "$TW_SOURCE_DIR/tests/golden/basic/expected-alerts.jsonl" alerts.jsonl \
  || fail "alerts of the good events changed"
for want in invalid_json wrong_type not_integer missing_field bad_credit_code bad_region bad_enum \
    unknown_type too_long; do
  grep -q "\"reason\":\"$want\"" dl.jsonl || fail "no dead-letter line with reason $want"
done
# Every dead-letter line names its position and keeps (a bounded part of) the raw input.
jq -e -s 'all(.[]; .origin == "mixed.jsonl" and (.line | type) == "number" and has("raw"))' dl.jsonl \
  >/dev/null || fail "dead-letter lines lack origin/line/raw"
jq -e -s 'map(select(.reason == "too_long"))[0] | .raw_truncated and .raw_len > 10000000' dl.jsonl \
  >/dev/null || fail "the 10 MB line is not marked truncated with its real length"
jq -e -s 'map(select(.reason == "missing_field"))[0] | .field == "ts" and .line == 9' dl.jsonl \
  >/dev/null || fail "missing_field line does not name field ts at line 9"
[ "$(wc -c < dl.jsonl)" -lt 200000 ] || fail "dead-letter file holds the whole 10 MB line"
grep -q "rejected" log.txt || fail "summary does not count rejected events"
echo "bad input dead-lettered, good input alerted"

# msgpack: an object the decoder refuses (nested too deep, or over 64 KiB) is dead-lettered and
# stepped over; the events after it are still read. Garbage that cannot be framed ends the input
# with one dead-letter line that says so.
"$TW" gen --institutions 12 --days 3 --seed 5 --out a.msgpack 2>/dev/null
"$TW" gen --institutions 12 --days 3 --seed 6 --out b.msgpack 2>/dev/null
"$TW" run --rules "$RULES" --input a.msgpack --state sa --alerts /dev/null 2>ca.txt
"$TW" run --rules "$RULES" --input b.msgpack --state sb --alerts /dev/null 2>cb.txt
na=$(grep -o '[0-9]* events read' ca.txt | cut -d' ' -f1)
nb=$(grep -o '[0-9]* events read' cb.txt | cut -d' ' -f1)
{
  cat a.msgpack
  printf '\x81\xa1x\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x01'          # 10 nested arrays
  printf '\x81\xa4text\xdb\x00\x01\x11\x70'; head -c 70000 /dev/zero | tr '\0' 'a'  # 70 kB string
  cat b.msgpack
} > mixed.msgpack
"$TW" run --rules "$RULES" --input mixed.msgpack --state sm --alerts /dev/null \
  --dead-letter dlm.jsonl 2>cm.txt || { cat cm.txt; fail "run failed on mixed msgpack"; }
grep -q "$((na + nb + 2)) events read, $((na + nb)) accepted, 2 rejected" cm.txt \
  || { cat cm.txt; fail "events after a refused msgpack object were lost"; }
grep -q '"reason":"too_deep"' dlm.jsonl || fail "no too_deep dead-letter line"
grep -q '"reason":"too_long"' dlm.jsonl || fail "no too_long dead-letter line"
{ cat a.msgpack; printf '\xc1\xc1\xc1'; cat b.msgpack; } > broken.msgpack
"$TW" run --rules "$RULES" --input broken.msgpack --state sx --alerts /dev/null \
  --dead-letter dlx.jsonl 2>cx.txt || fail "run failed on broken msgpack"
grep -q "$((na + 1)) events read" cx.txt || { cat cx.txt; fail "broken msgpack not reported once"; }
grep -q "rest of this input is not read" dlx.jsonl || fail "the dead-letter line does not say input ended"
echo "msgpack: refused objects stepped over, unframeable input reported"
