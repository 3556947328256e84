#!/usr/bin/env bash
# DISTINCT beyond its exact limit (256 values per key, then a HyperLogLog estimate) gives the same
# values whatever the group-commit size (--batch 500 / 100000), the shard count (1 / 2) and
# restarts (the input read in three runs on one state, split right before and right after a
# key's switch to the sketch): alerts keyed by province compared sorted, byte for byte.
#
# The estimate is a function of the value hashes, and student_id is pseudonymised with the key
# of the state directory (DIR/pseudonym.key, random when created): so every state here gets the
# same key file. Under another key the exact values (up to each key's switch) are the same, the
# estimates after it may differ; both are checked, and that an estimate never exceeds the
# events of its window.
. "$(dirname "$0")/lib.sh"

"$TW" gen --institutions 400 --days 12 --seed 5 --out e.jsonl 2>/dev/null
cat > rules.yaml <<'EOF'
version: 1
aggregates:
  province_payers_7d: {on: [payment], by: province, fn: distinct(student_id), window: 7d}
  province_payments_7d: {on: [payment], by: province, fn: count(), window: 7d}
rules:
  - name: province_payers
    on: [payment]
    by: province
    when: true
    severity: info
    message: "{province_payers_7d} {province_payments_7d}"
EOF
printf '%s' 'tutorwatch-distinct-determinism!' > key # 32 bytes, TW_PSEUDO_KEY_BYTES
expect_eq "key size" "$(wc -c < key | tr -d ' ')" 32

# new_state DIR: an empty state directory holding the shared pseudonym key.
new_state() {
  mkdir -m 700 "$1"
  cp key "$1/pseudonym.key"
  chmod 600 "$1/pseudonym.key"
}

# run_cfg NAME INPUT BATCH SHARDS [STATE]: run (appending to alerts-NAME.jsonl).
run_cfg() {
  local st=${5:-st-$1}
  [ -d "$st" ] || new_state "$st"
  "$TW" run --rules rules.yaml --input "$2" --state "$st" --no-sync --batch "$3" --shards "$4" \
    --alerts "alerts-$1.jsonl" --dead-letter "dl-$1.jsonl" 2>"run-$1.log" \
    || { cat "run-$1.log"; fail "run $1 failed"; }
}

run_cfg ref e.jsonl 500 1
sort alerts-ref.jsonl > ref.sorted
[ ! -s dl-ref.jsonl ] || fail "the generated stream has rejected events"
# "payers payments" per alert, in event order.
jq -r '[.key, .message] | join(" ")' alerts-ref.jsonl > ref.msg
# The stream must take keys past the exact limit, or this test says nothing.
big=$(awk '$3 > 256' ref.msg | wc -l)
[ "$big" -ge 100 ] || fail "only $big alerts with more than 256 payments in 7 days"
awk '$2 > $3 { print; bad = 1 } END { exit bad }' ref.msg \
  || fail "a distinct count above the number of payments (above)"

for cfg in "b100000-s1 100000 1" "b500-s2 500 2" "b100000-s2 100000 2"; do
  set -- $cfg
  run_cfg "$1" e.jsonl "$2" "$3"
  sort "alerts-$1.jsonl" | cmp -s - ref.sorted || {
    diff <(jq -r '[.key, .event_time, .message] | join(" ")' alerts-ref.jsonl | sort) \
      <(jq -r '[.key, .event_time, .message] | join(" ")' "alerts-$1.jsonl" | sort) | head -6 >&2
    fail "--batch $2 --shards $3: alerts differ from --batch 500 --shards 1"
  }
done

# Restarts around the first switch: the payment that brings a province to its 257th distinct
# student (counted from the raw input; within the first 7 days nothing has left the window). Run
# one stops right before it, run two reads just it, run three the rest (the input grows between
# runs, and each run resumes where the last stopped).
read -r sw_line sw_key < <(jq -r 'select(.type == "payment")
    | [input_line_number, .region[0:2] + "0000", .student_id] | @tsv' e.jsonl \
  | awk -F'\t' '!seen[$2 SUBSEP $3]++ && ++n[$2] == 257 { print $1, $2; exit }')
[ -n "${sw_line:-}" ] || fail "no province reached 257 distinct students"
t_first=$(date -d "$(head -n 1 e.jsonl | jq -r .ts)" +%s)
t_sw=$(date -d "$(sed -n "${sw_line}p" e.jsonl | jq -r .ts)" +%s)
[ $((t_sw - t_first)) -lt $((7 * 86400)) ] || fail "the switch is not in the first 7 days"
jq -c --arg k "$sw_key" --arg id "g5-$((sw_line - 1))" \
  'select(.key == $k and .event_ids[0] == $id)' alerts-ref.jsonl | grep -q . \
  || fail "no alert of $sw_key for the switching event (line $sw_line)"
: > grow.jsonl
for upto in "$((sw_line - 1))" "$sw_line" "$(wc -l < e.jsonl)"; do
  head -n "$upto" e.jsonl > grow.tmp && mv grow.tmp grow.jsonl
  run_cfg restart grow.jsonl 500 1
done
sort alerts-restart.jsonl | cmp -s - ref.sorted || {
  diff <(jq -r '[.key, .event_time, .message] | join(" ")' alerts-ref.jsonl | sort) \
    <(jq -r '[.key, .event_time, .message] | join(" ")' alerts-restart.jsonl | sort) | head -6 >&2
  fail "three runs split around the switch of $sw_key at line $sw_line differ from one run"
}

# Another pseudonym key (a fresh temporary state): every value up to each key's switch is exact
# and equal; afterwards the values stay within the events of their windows.
"$TW" run --rules rules.yaml --input e.jsonl --no-sync --alerts alerts-other.jsonl \
  --dead-letter dl-other.jsonl 2>run-other.log || { cat run-other.log; fail "run under another key failed"; }
jq -r '[.key, .message] | join(" ")' alerts-other.jsonl > other.msg
expect_eq "alerts under another key" "$(wc -l < other.msg)" "$(wc -l < ref.msg)"
paste -d' ' ref.msg other.msg | awk '
  $1 != $4 || $3 != $6 { print "line " NR ": " $0; bad = 1; exit }
  $3 > 256 { switched[$1] = 1 }
  !switched[$1] && $2 != $5 { print "exact value differs, line " NR ": " $0; bad = 1; exit }
  $5 > $6 { print "estimate above the events, line " NR ": " $0; bad = 1; exit }
  END { exit bad }' || fail "under another pseudonym key (above)"
echo "distinct determinism: $(wc -l < ref.msg) alerts ($big past 256 payments) identical for" \
  "--batch 500/100000 x --shards 1/2 and three runs split at the switch"
