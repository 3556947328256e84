#!/usr/bin/env bash
# Every command has --help (exit 0, names its options); usage errors exit 2; a broken rule file
# stops `run` with exit 1 and a file:line:col message.
. "$(dirname "$0")/lib.sh"
"$TW" --help | grep -q "run" || fail "top-level help lists no commands"
for cmd in run gen send feed check journal reload keys alerts audit; do
  "$TW" "$cmd" --help > help-$cmd.txt || fail "$cmd --help exited non-zero"
  grep -q "usage: tutorwatch $cmd" help-$cmd.txt || fail "$cmd --help has no usage line"
done
grep -q -- "--dead-letter" help-run.txt || fail "run --help does not explain --dead-letter"
set +e
"$TW" nosuch 2>/dev/null; expect_eq "unknown command status" $? 2
"$TW" run --input x.jsonl 2>/dev/null; expect_eq "run without --rules" $? 2
"$TW" run --rules "$RULES" --input x.jsonl --format xml 2>/dev/null; expect_eq "bad --format" $? 2
printf 'version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: institution_id\n    when: amout_fen > 5000yuan\n    severity: high\n' > bad.yaml
"$TW" run --rules bad.yaml --input /dev/null 2>err.txt; st=$?
set -e
expect_eq "bad rule file status" "$st" 1
grep -q "bad.yaml:6:" err.txt || { cat err.txt; fail "rule error does not name file:line"; }
grep -q "amount_fen" err.txt || { cat err.txt; fail "rule error suggests no correction"; }

# Output that cannot be written is an error, not a silent loss.
g="$TW_SOURCE_DIR/tests/golden/basic/events.jsonl"
set +e
"$TW" run --rules "$RULES" --input "$g" --alerts /dev/full 2>full.txt; st=$?
set -e
expect_eq "status when alerts cannot be written" "$st" 1
grep -q "alert writes failed" full.txt || { cat full.txt; fail "no message about failed alert writes"; }
set +e
"$TW" run --rules "$RULES" --input "$g" --dead-letter /nonexistent-dir/dl.jsonl 2>dl.txt; st=$?
set -e
expect_eq "status with an unwritable dead-letter path" "$st" 1
grep -q "cannot open the dead-letter file" dl.txt || { cat dl.txt; fail "no dead-letter path error"; }
# A UTF-8 byte order mark at the start of a JSON Lines file is not an error.
{ printf '\xef\xbb\xbf'; cat "$g"; } > bom.jsonl
"$TW" run --rules "$RULES" --input bom.jsonl --alerts bom-alerts.jsonl 2>bom.txt
grep -q "26 accepted, 0 rejected" bom.txt || { cat bom.txt; fail "a BOM broke the first event"; }
echo "cli help and errors ok"
