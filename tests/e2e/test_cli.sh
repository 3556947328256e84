#!/usr/bin/env bash
# Every command has --help (exit 0, names its options); usage errors exit 2; a broken rule file
# stops `run` with exit 1 and a file:line:col message.
. "$(dirname "$0")/lib.sh"
"$TW" --help | grep -q "run" || fail "top-level help lists no commands"
for cmd in run gen send feed; do
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
echo "cli help and errors ok"
