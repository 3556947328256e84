#!/usr/bin/env bash
# `tutorwatch eval`: scores hand-written alerts against a hand-written truth file, so every figure
# has a known right value: recall, precision, false alerts per 1,000 institution-days, lead time
# (median and 10th percentile), per scenario and overall, in the table and in --json; families
# come from the rules' `family` labels; alerts before onset, on look-alikes and on institutions
# outside the truth are false; bad input is an error naming the line; usage errors exit 2.
. "$(dirname "$0")/lib.sh"
cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" schema.yaml
cat > rules.yaml <<'YAML'
version: 1
rules:
  - name: cap
    on: [payment]
    by: institution_id
    when: amount_fen > 5000yuan
    severity: high
    labels: {family: collection_caps}
  - name: closing
    on: [institution]
    by: institution_id
    when: action == "close"
    severity: critical
    labels: {family: closures}
  - name: composite
    on: [alert]
    by: institution_id
    when: rule != "composite"
    severity: critical
    cooldown: 14d
    labels: {family: runaway}
  - name: unlabelled
    on: [complaint]
    by: institution_id
    when: true
    severity: low
YAML
# A: caps, found (alert at onset).  B: caps, missed (its only alert is before onset).
# C, D: run-aways with collapses, found 20 and 10 days ahead.  E: a look-alike.
cat > truth.jsonl <<'JSON'
{"institution_id":"A","region":"440106","scenario":"over_cap","family":"collection_caps","onset":"2025-03-10T10:00:00+08:00","collapse":null}
{"institution_id":"B","region":"440106","scenario":"over_cap","family":"collection_caps","onset":"2025-03-10T10:00:00+08:00","collapse":null}
{"institution_id":"C","region":"440106","scenario":"runaway","family":"runaway","onset":"2025-03-01T00:00:00+08:00","collapse":"2025-04-01T00:00:00+08:00"}
{"institution_id":"D","region":"440106","scenario":"runaway","family":"runaway","onset":"2025-03-01T00:00:00+08:00","collapse":"2025-04-01T00:00:00+08:00"}
{"institution_id":"E","region":"440106","scenario":"seasonal_surge","family":"healthy","onset":"2025-03-01T00:00:00+08:00","collapse":null}
JSON
alert() { printf '{"alert_id":"x","rule":"%s","institution_id":"%s","event_time":"%s"}\n' "$@"; }
{
  alert cap A 2025-03-10T10:00:00.000+08:00       # true, finds A
  alert cap A 2025-03-11T10:00:00.000+08:00       # true
  alert cap B 2025-03-09T10:00:00.000+08:00       # false: before B's onset
  alert closing C 2025-03-05T00:00:00.000+08:00   # true, but not C's family
  alert composite C 2025-03-12T00:00:00.000+08:00 # true, finds C: 20 days ahead
  alert composite C 2025-03-02T00:00:00.000+08:00 # true, earlier: C's lead is 30 days
  alert composite D 2025-03-22T00:00:00.000+08:00 # true, finds D: 10 days ahead
  alert cap E 2025-03-05T00:00:00.000+08:00       # false: a look-alike
  alert unlabelled Z 2025-03-05T00:00:00.000+08:00 # false: not in the truth
} > alerts.jsonl
"$TW" eval --truth truth.jsonl --alerts alerts.jsonl --rules rules.yaml --institutions 10 \
  --days 100 --json eval.json > table.txt 2>err.txt || { cat table.txt err.txt; fail "eval failed"; }
cat table.txt
jqe() { jq -r "$1" eval.json; }
expect_eq "overall recall" "$(jqe .overall.recall)" "0.75"
expect_eq "overall precision" "$(jqe .overall.precision)" "0.667"
expect_eq "false alerts per 1000" "$(jqe .overall.false_alerts_per_1000_institution_days)" "3"
expect_eq "lead median" "$(jqe .overall.lead_time_days_median)" "20"
expect_eq "lead p10" "$(jqe .overall.lead_time_days_p10)" "10"
expect_eq "over_cap recall" "$(jqe .scenarios.over_cap.recall)" "0.5"
expect_eq "over_cap precision" "$(jqe .scenarios.over_cap.precision)" "0.667"
expect_eq "runaway found" "$(jqe .scenarios.runaway.found)" "2"
expect_eq "runaway lead median" "$(jqe .scenarios.runaway.lead_time_days_median)" "20"
expect_eq "look-alike recall" "$(jqe .scenarios.seasonal_surge.recall)" "null"
expect_eq "look-alike false alerts" "$(jqe .scenarios.seasonal_surge.false_alerts)" "1"
expect_eq "over_cap lead" "$(jqe .scenarios.over_cap.lead_time_days_median)" "null"
grep -q '^overall  *4  *3  *0.75  *9  *6  *0.67  *20.00  *10.00' table.txt || fail "overall row"
grep -q '^false alerts: 3 (3.000 per 1,000 institution-days' table.txt || fail "false alert line"
grep -q 'without a family label in the rule file: 1' table.txt || fail "unlabelled rule not counted"

# Without --institutions/--days the rate is null; --json - writes to stdout after the table.
"$TW" eval --truth truth.jsonl --alerts alerts.jsonl --rules rules.yaml --json - > both.txt
sed -n '/^{/,$p' both.txt | jq -e '.overall.false_alerts_per_1000_institution_days == null' \
  > /dev/null || fail "rate without --institutions should be null"

# Bad input names the file and line; exit 1.
printf '%s\n' "$(head -1 truth.jsonl)" '{"institution_id":"Q","scenario":"x"}' > bad.jsonl
set +e
"$TW" eval --truth bad.jsonl --alerts alerts.jsonl --rules rules.yaml > /dev/null 2> bad.err
rc=$?
set -e
expect_eq "exit on a bad truth line" "$rc" 1
grep -q 'bad.jsonl:2: not a truth line' bad.err || { cat bad.err; fail "bad line not named"; }
printf '{"rule":"cap"}\n' > badalerts.jsonl
set +e
"$TW" eval --truth truth.jsonl --alerts badalerts.jsonl --rules rules.yaml > /dev/null 2> bad2.err
rc=$?
set -e
expect_eq "exit on a bad alert line" "$rc" 1
grep -q 'badalerts.jsonl:1: not an alert' bad2.err || { cat bad2.err; fail "bad alert not named"; }

# Usage errors: exit 2.
for args in "--alerts alerts.jsonl" "--truth truth.jsonl" \
  "--truth truth.jsonl --alerts alerts.jsonl --days 3" "--bogus"; do
  set +e
  # shellcheck disable=SC2086
  "$TW" eval $args > /dev/null 2>&1
  rc=$?
  set -e
  expect_eq "usage error exit for '$args'" "$rc" 2
done
"$TW" eval --help | grep -q -- '--institutions' || fail "--help lacks --institutions"
echo "test_eval.sh: ok"
