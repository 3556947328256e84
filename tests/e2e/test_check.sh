#!/usr/bin/env bash
# `tutorwatch check` compiles rule files like `run`: the default pack passes; a broken file fails
# with file:line:col, the source line and a caret under the column; YAML alias bombs are refused
# at once; several files are checked in one call and any failure gives exit 1.
. "$(dirname "$0")/lib.sh"
"$TW" check "$RULES" > ok.txt
grep -q "default.yaml: ok (6 aggregates, 6 rules" ok.txt || { cat ok.txt; fail "default pack does not pass check"; }
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
timeout 5 "$TW" check --schema "$TW_SOURCE_DIR/rules/packs/schema.yaml" bomb.yaml 2> bomb.txt
st=$?
set -e
expect_eq "alias bomb status" "$st" 1
grep -q "anchors or aliases" bomb.txt || { cat bomb.txt; fail "alias bomb not refused by name"; }
set +e
"$TW" check 2>/dev/null; st=$?
set -e
expect_eq "check without files" "$st" 2
echo "check reports errors with location and caret"
