#!/usr/bin/env bash
# The default rules find every problem institution that `gen` injects, from JSON Lines and from
# msgpack alike (byte-identical alerts), and healthy institutions stay quiet.
# (Sizes are small so the suite stays fast under the sanitizers; the Done-when size
# --institutions 2000 --days 120 is run the same way, see docs/operations.md.)
. "$(dirname "$0")/lib.sh"
N=${TW_INJECTED_INSTITUTIONS:-400}
D=${TW_INJECTED_DAYS:-75}
"$TW" gen --institutions "$N" --days "$D" --seed 7 --out e.jsonl --truth truth.jsonl
"$TW" gen --institutions "$N" --days "$D" --seed 7 --format msgpack --out e.msgpack
[ -s truth.jsonl ] || fail "gen wrote no ground truth"
"$TW" run --rules "$RULES" --input e.jsonl --state s1 --no-sync --alerts a.jsonl \
  --dead-letter dl1.jsonl 2>log1.txt || { cat log1.txt; fail "run on jsonl failed"; }
"$TW" run --rules "$RULES" --input e.msgpack --format msgpack --state s2 --no-sync \
  --alerts a2.jsonl --dead-letter dl2.jsonl 2>log2.txt || { cat log2.txt; fail "run on msgpack failed"; }
cat log1.txt log2.txt
[ ! -s dl1.jsonl ] || { head -3 dl1.jsonl; fail "generated events were rejected"; }
[ ! -s dl2.jsonl ] || { head -3 dl2.jsonl; fail "generated msgpack events were rejected"; }
cmp a.jsonl a2.jsonl || fail "msgpack input gave other alerts than JSON Lines"

# Which rules show each kind of injected problem.
rules_for() {
  case "$1" in
    over_cap) echo "prepaid_over_cap" ;;
    unsupervised) echo "payment_outside_supervised_account" ;;
    complaint_storm) echo "complaint_spike complaint_runaway_words" ;;
    closure_with_balance) echo "closure_with_prepaid_balance" ;;
    *) echo "" ;;
  esac
}
jq -r '"\(.institution_id) \(.rule)"' a.jsonl | sort -u > fired.txt
missed=0
while read -r line; do
  inst=$(jq -r .institution_id <<<"$line")
  problem=$(jq -r .problem <<<"$line")
  wanted=$(rules_for "$problem")
  [ -n "$wanted" ] || fail "unknown injected problem '$problem'"
  found=0
  for r in $wanted; do
    if grep -qxF "$inst $r" fired.txt; then found=1; fi
  done
  if [ $found = 0 ]; then
    echo "missed: $inst ($problem)" >&2
    missed=$((missed + 1))
  fi
done < truth.jsonl
expect_eq "injected problems missed" "$missed" 0
# Healthy institutions raise no alert at all.
false_pos=$(jq -r .institution_id a.jsonl | sort -u | { grep -v -F -f <(jq -r .institution_id truth.jsonl) || true; } | wc -l)
expect_eq "healthy institutions with alerts" "$false_pos" 0
echo "found all $(wc -l < truth.jsonl) injected problems, no false positives"
