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
