#!/usr/bin/env bash
# Golden alert files: for every tests/golden/<case>/, run the real binary on events.jsonl with
# rules.yaml (or the default pack) and compare the alerts byte for byte with expected-alerts.jsonl
# (and the dead-letter lines with expected-dead-letter.jsonl when present).
# UPDATE_GOLDEN=1 rewrites the expected files instead; review the diff before committing.
. "$(dirname "$0")/lib.sh"
n=0
for dir in "$TW_SOURCE_DIR"/tests/golden/*/; do
  name=$(basename "$dir")
  rules="$RULES"
  [ -f "$dir/rules.yaml" ] && rules="$dir/rules.yaml"
  rm -rf "state-$name"
  "$TW" run --rules "$rules" --input "$dir/events.jsonl" --state "state-$name" --no-sync \
    --alerts "alerts-$name.jsonl" --dead-letter "dl-$name.jsonl" 2>"log-$name.txt" \
    || { cat "log-$name.txt"; fail "$name: run exited non-zero"; }
  touch "alerts-$name.jsonl" "dl-$name.jsonl"
  if [ "${UPDATE_GOLDEN:-0}" = 1 ]; then
    cp "alerts-$name.jsonl" "$dir/expected-alerts.jsonl"
    [ -s "dl-$name.jsonl" ] && cp "dl-$name.jsonl" "$dir/expected-dead-letter.jsonl"
  fi
  diff -u "$dir/expected-alerts.jsonl" "alerts-$name.jsonl" || fail "$name: alerts differ from golden"
  if [ -f "$dir/expected-dead-letter.jsonl" ]; then
    diff -u "$dir/expected-dead-letter.jsonl" "dl-$name.jsonl" || fail "$name: dead-letter differs"
  fi
  # Same input, same bytes: a second run on fresh state with another batch size matches.
  "$TW" run --rules "$rules" --input "$dir/events.jsonl" --state "state2-$name" --no-sync \
    --batch 1 --alerts "alerts2-$name.jsonl" --dead-letter "dl2-$name.jsonl" 2>/dev/null
  touch "alerts2-$name.jsonl"
  cmp "alerts-$name.jsonl" "alerts2-$name.jsonl" || fail "$name: batch size changed the alerts"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "no golden cases found"
echo "golden: $n cases match"
