#!/usr/bin/env bash
# `tutorwatch check` compiles rule files like `run`: the default pack passes; a broken file fails
# with file:line:col, the source line and a caret under the column; YAML alias bombs are refused
# at once; several files are checked in one call and any failure gives exit 1.
. "$(dirname "$0")/lib.sh"
"$TW" check "$RULES" > ok.txt
grep -q "default.yaml: ok (35 aggregates, 24 rules" ok.txt || { cat ok.txt; fail "default pack does not pass check"; }
printf 'version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: institution_id\n    when: amout_fen > 5000yuan\n    severity: high\n' > bad.yaml
set +e
"$TW" check --schema "$TW_SOURCE_DIR/rules/packs/schema.yaml" "$RULES" bad.yaml > out.txt 2> err.txt
st=$?
set -e
expect_eq "check status with one bad file" "$st" 1
grep -q "default.yaml: ok" out.txt || fail "the good file was not reported ok next to the bad one"
expect_eq "error line" "$(sed -n 1p err.txt)" "bad.yaml:6:11: error: unknown field 'amout_fen' (did you mean 'amount_fen'?)"
expect_eq "source line" "$(sed -n 2p err.txt)" "      when: amout_fen > 5000yuan"
expect_eq "caret line" "$(sed -n 3p err.txt)" "            ^"
cp "$TW_SOURCE_DIR/../shared/cases/011-yaml-alias-bomb.yaml" bomb.yaml 2>/dev/null \
  || printf 'version: 1\nlists:\n  a0: &a0 ["lol"]\n  a1: [*a0,*a0]\n' > bomb.yaml
set +e
timeout 5 "$TW" check --schema "$TW_SOURCE_DIR/rules/packs/schema.yaml" bomb.yaml > /dev/null 2> bomb.txt
st=$?
set -e
expect_eq "alias bomb status" "$st" 1
grep -q "anchors or aliases" bomb.txt || { cat bomb.txt; fail "alias bomb not refused by name"; }
set +e
"$TW" check 2>/dev/null; st=$?
set -e
expect_eq "check without files" "$st" 2
# Every error, not only the first, in file order; then a summary line.
cat > multi.yaml <<'EOF2'
version: 1
params:
  cap: 5000yuan
macros:
  a: b + 1
  b: a + 1
rules:
  - {name: r1, on: [payment], by: institution_id, when: amount_fen > cap, severity: hihg}
  - {name: r2, on: [payment], by: institution_id, when: a > 1, severity: low}
  - {name: r3, on: [payment], by: institution_id, when: amout_fen > cap, severity: low}
EOF2
set +e
"$TW" check --schema "$TW_SOURCE_DIR/rules/packs/schema.yaml" --set cpa=1yuan multi.yaml > mout.txt 2> merr.txt
st=$?
set -e
expect_eq "check status with errors" "$st" 1
expect_eq "diagnostics" "$(grep -E '(error|warning):' merr.txt)" "multi.yaml: error: --set: unknown param 'cpa' (did you mean 'cap'?)
multi.yaml:6:6: error: macro cycle: a -> b -> a
multi.yaml:8:85: error: unknown severity 'hihg' (did you mean 'high'?)
multi.yaml:10:57: error: unknown field 'amout_fen' (did you mean 'amount_fen'?)"
expect_eq "summary" "$(cat mout.txt)" "multi.yaml: 4 errors, 0 warnings"
# Warnings only: exit 0, with the lint of case 010 (a regex that backtracks catastrophically).
cp "$TW_SOURCE_DIR/../shared/cases/010-redos-rules.yaml" redos.yaml 2>/dev/null \
  || printf 'version: 1\nrules:\n  - name: catastrophic\n    on: [complaint]\n    by: institution_id\n    when: text matches "(a+)+$"\n    severity: low\n' > redos.yaml
"$TW" check --schema "$TW_SOURCE_DIR/rules/packs/schema.yaml" redos.yaml > rout.txt 2> rerr.txt \
  || { cat rerr.txt; fail "warnings alone made check fail"; }
grep -q "redos.yaml:6:24: warning: regex may backtrack catastrophically" rerr.txt \
  || { cat rerr.txt; fail "no ReDoS warning"; }
grep -q "redos.yaml: ok (0 aggregates, 1 rule, 1 warning" rout.txt || { cat rout.txt; fail "summary"; }
echo "check reports errors with location and caret"
