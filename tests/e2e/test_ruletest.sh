#!/usr/bin/env bash
# `tutorwatch test` runs the tests: section of rule files: the default pack passes all of its
# tests; a file with passing and failing tests prints ok/FAIL per test, the diff (expected items
# no alert met, unexpected alerts, given events the engine rejected with their reason and YAML
# line) and a summary, and exits 1; errors in the tests section are file:line:col with a caret;
# a file without tests passes; `set` overrides params for one test; temporary states are removed.
. "$(dirname "$0")/lib.sh"
mkdir tmp
export TMPDIR="$TW_WORK/tmp"

# The default pack: every rule's tests pass.
"$TW" test "$RULES" > pack.txt || { cat pack.txt; fail "the default pack's tests do not pass"; }
grep -q '^[0-9]* passed, 0 failed$' pack.txt || { cat pack.txt; fail "no summary for the pack"; }
# Every rule of the pack is named by a test that expects it and by one that expects none of it.
for rule in $(sed -n 's/^  - name: \([a-z0-9_]*\)$/\1/p' "$RULES" | sort -u); do
  grep -q "{rule: $rule" "$RULES" || fail "the default pack has no test expecting $rule"
  grep -Eq "expect_none: \[([a-z0-9_]+, )*$rule[],]" "$RULES" ||
    fail "the default pack has no test where $rule must stay quiet"
done
if grep -q '^FAIL' pack.txt; then cat pack.txt; fail "a default pack test failed"; fi

cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" schema.yaml
cat > mixed.yaml <<'YAML'
version: 1
params:
  cap: 5000yuan
rules:
  - name: big_payment
    on: [payment]
    by: institution_id
    when: amount_fen > cap
    severity: high
    message: "payment of {amount_fen / 100} yuan"
  - name: unsupervised
    on: [payment]
    by: institution_id
    when: channel == "unsupervised"
    severity: critical
tests:
  - name: passes
    defaults: {institution_id: "52440106MJL176301K", region: "440106", student_id: S1, course_id: C1, class_hours: 1, service_days: 1}
    given:
      - {type: payment, ts: "2025-03-01T10:00:00+08:00", amount_fen: 600000, channel: supervised}
    expect:
      - {rule: big_payment, region: 440106, message_contains: "6000 yuan"}
    expect_none: [unsupervised]
  - name: expects too much
    defaults: {institution_id: "52440106MJL176301K", region: "440106", student_id: S1, course_id: C1, class_hours: 1, service_days: 1}
    given:
      - {type: payment, ts: "2025-03-01T10:00:00+08:00", amount_fen: 600000, channel: unsupervised}
    expect:
      - {rule: big_payment, message: "payment of 7000 yuan"}
    expect_none: unsupervised
  - name: bad channel
    defaults: {institution_id: "52440106MJL176301K", region: "440106", student_id: S1, course_id: C1, class_hours: 1, service_days: 1}
    given:
      - {type: payment, ts: "2025-03-01T10:00:00+08:00", amount_fen: 600000, channel: cash}
    expect:
      - {rule: big_payment}
  - name: with a parameter
    set: {cap: 3000yuan}
    defaults: {institution_id: "52440106MJL176301K", region: "440106", student_id: S1, course_id: C1, class_hours: 1, service_days: 1}
    given:
      - {type: payment, ts: "2025-03-01T10:00:00+08:00", amount_fen: 400000, channel: supervised}
    expect:
      - {rule: big_payment, message: "payment of 4000 yuan"}
  - name: a wrong parameter
    set: {cpa: 3000yuan}
    given: []
YAML
set +e
"$TW" test mixed.yaml > mixed.txt 2> mixed.err
st=$?
set -e
expect_eq "status with failing tests" "$st" 1
expect_eq "first test" "$(sed -n 1p mixed.txt)" "ok   mixed.yaml: passes"
expect_eq "second test" "$(sed -n 2p mixed.txt)" "FAIL mixed.yaml: expects too much"
expect_eq "its unmet expectation" "$(sed -n 3p mixed.txt)" \
  '  - expected {"rule":"big_payment","message":"payment of 7000 yuan"}'
line=$(sed -n 4p mixed.txt)
case "$line" in
  '  + unexpected {"alert_id":"'*'"rule":"big_payment"'*'"message":"payment of 6000 yuan"'*) ;;
  *) fail "the unmatched big_payment alert is not shown: $line" ;;
esac
line=$(sed -n 5p mixed.txt)
case "$line" in
  '  + unexpected {"alert_id":"'*'"rule":"unsupervised"'*) ;;
  *) fail "the alert of a rule in expect_none is not shown: $line" ;;
esac
expect_eq "third test" "$(sed -n 6p mixed.txt)" "FAIL mixed.yaml: bad channel"
line=$(sed -n 7p mixed.txt)
case "$line" in
  "  ! given event at line 34 rejected: bad_enum (channel): field 'channel'"*) ;;
  *) fail "the rejected event does not name its reason and line: $line" ;;
esac
expect_eq "the expectation it left unmet" "$(sed -n 8p mixed.txt)" '  - expected {"rule":"big_payment"}'
expect_eq "fourth test (set: cap lowered)" "$(sed -n 9p mixed.txt)" "ok   mixed.yaml: with a parameter"
expect_eq "fifth test" "$(sed -n 10p mixed.txt)" "FAIL mixed.yaml: a wrong parameter"
grep -q "unknown param 'cpa' (did you mean 'cap'?)" mixed.txt \
  || { cat mixed.txt; fail "a test with a wrong param does not name it"; }
expect_eq "summary" "$(tail -n 1 mixed.txt)" "2 passed, 3 failed"

# Errors in the tests section: file:line:col, the line and a caret; the file fails.
cat > badkey.yaml <<'YAML'
version: 1
rules:
  - name: big_payment
    on: [payment]
    by: institution_id
    when: amount_fen > 5000yuan
    severity: high
tests:
  - name: typo
    expcet: [{rule: big_payment}]
YAML
set +e
"$TW" test badkey.yaml > badkey.txt 2> badkey.err
st=$?
set -e
expect_eq "status with a bad tests section" "$st" 1
expect_eq "error line" "$(sed -n 1p badkey.err)" \
  "badkey.yaml:10:5: unknown key 'expcet' in a test (did you mean 'expect'?)"
expect_eq "source line" "$(sed -n 2p badkey.err)" "      expcet: [{rule: big_payment}]"
expect_eq "caret line" "$(sed -n 3p badkey.err)" "      ^"
sed -e 's/expcet: \[{rule: big_payment}\]/expect_none: [big_paymnet]/' badkey.yaml > badrule.yaml
set +e
"$TW" test badrule.yaml > /dev/null 2> badrule.err
st=$?
set -e
expect_eq "status with an unknown rule" "$st" 1
expect_eq "unknown rule" "$(sed -n 1p badrule.err)" \
  "badrule.yaml:10:19: unknown rule 'big_paymnet' in test 'typo' (did you mean 'big_payment'?)"
sed -e 's/expcet: \[{rule: big_payment}\]/at: "2025-13-01T00:00:00+08:00"/' badkey.yaml > badat.yaml
set +e
"$TW" test badat.yaml > /dev/null 2> badat.err
st=$?
set -e
expect_eq "status with a bad time" "$st" 1
grep -q "^badat.yaml:10:9: bad time '2025-13-01T00:00:00+08:00' in 'at'" badat.err \
  || { cat badat.err; fail "a bad time in at is not located"; }

# A file that does not load is reported as check reports it.
printf 'version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: institution_id\n    when: amout_fen > 5000yuan\n    severity: high\n' > broken.yaml
set +e
"$TW" test broken.yaml > /dev/null 2> broken.err
st=$?
set -e
expect_eq "status with rules that do not load" "$st" 1
expect_eq "load error" "$(sed -n 1p broken.err)" \
  "broken.yaml:6:11: unknown field 'amout_fen' (did you mean 'amount_fen'?)"

# A file without tests passes, and so does a run of several files when every test passes.
head -n 7 badkey.yaml > notests.yaml
"$TW" test notests.yaml "$RULES" > notests.txt
expect_eq "no tests" "$(sed -n 1p notests.txt)" "notests.yaml: no tests"
set +e
"$TW" test 2> /dev/null
st=$?
set -e
expect_eq "test without files" "$st" 2

# Every test ran on its own temporary state, and each was removed.
[ -z "$(ls -A tmp)" ] || { ls -la tmp; fail "temporary states were left behind"; }
echo "rule tests: ok/FAIL per test, diffs, located errors, temporary states removed"
