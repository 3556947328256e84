#!/usr/bin/env bash
# --shards N: the same alerts (same ids, same bytes; compared sorted) whatever the shard count,
# from JSON Lines and msgpack, and from an input shuffled within the allowed lateness; a sharded
# run killed with SIGKILL resumes to the same journal; a state keeps its shard count; serving
# with shards is refused for now.
. "$(dirname "$0")/lib.sh"
"$TW" gen --institutions 600 --days 20 --seed 13 --out e.jsonl 2>/dev/null
"$TW" gen --institutions 600 --days 20 --seed 13 --out e.msgpack 2>/dev/null
# Shuffle within each clock hour of event time (so every event stays inside the 1h lateness;
# a window of lines may span the night's gap of hours).
awk '{ match($0, /"ts":"[^"]*T[0-9][0-9]/); printf "%s\t%d\t%s\n", substr($0, RSTART, RLENGTH), (NR * 7919) % 50, $0 }' e.jsonl \
  | sort -s -k1,1 -k2,2n | cut -f3- > shuffled.jsonl
cmp -s e.jsonl shuffled.jsonl && fail "the shuffle changed nothing"
# Routing reads the top-level institution_id as the decoder does: a nested key of the same name
# and a JSON-escaped code must not send an event to another institution's shard.
awk 'NR % 2 == 0 { sub(/^\{/, "{\"meta\":{\"institution_id\":\"nested\"},"); }
     NR % 3 == 0 { sub(/"institution_id": *"5/, "\"institution_id\":\"\\u0035"); } { print }' \
  e.jsonl > tricky.jsonl
grep -q '"meta":{"institution_id"' tricky.jsonl && grep -q 'u0035' tricky.jsonl \
  || fail "the tricky input was not built"
sorted_journal() { "$TW" journal --state "$1" | sed -E 's/^\{("shard":[0-9]+,)?"seq":[0-9]+,/{/' | sort; }
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts ref.jsonl 2>/dev/null
sort ref.jsonl > ref.sorted
[ "$(wc -l < ref.sorted)" -gt 5 ] || fail "reference has too few alerts to compare"
for n in 2 4; do
  for input in e.jsonl e.msgpack shuffled.jsonl tricky.jsonl; do
    "$TW" run --rules "$RULES" --input "$input" --state "s$n-$input" --shards "$n" --no-sync \
      --alerts "a$n-$input" 2>"log$n-$input" || { cat "log$n-$input"; fail "--shards $n on $input failed"; }
    sort "a$n-$input" | cmp -s - ref.sorted || fail "--shards $n on $input: alerts differ from one shard"
    sorted_journal "s$n-$input" | cmp -s - ref.sorted || fail "--shards $n on $input: journal differs"
  done
done
ls -d s4-e.jsonl/shard-3 >/dev/null || fail "no per-shard state directory"

# Killed mid-file and restarted: the journal ends equal to the uninterrupted run.
for delay in 0.2 0.5; do
  rm -rf k
  "$TW" run --rules "$RULES" --input shuffled.jsonl --state k --shards 3 --batch 500 \
    --alerts ka.jsonl 2>/dev/null &
  pid=$!
  sleep "$delay"
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  "$TW" run --rules "$RULES" --input shuffled.jsonl --state k --shards 3 --batch 500 \
    --alerts ka.jsonl 2>restart.log || { cat restart.log; fail "restart after kill failed"; }
  sorted_journal k | cmp -s - ref.sorted || fail "killed after ${delay}s: journal differs"
done

set +e
"$TW" run --rules "$RULES" --input e.jsonl --state s4-e.jsonl --shards 2 --alerts x 2>mismatch.txt
st=$?
"$TW" run --rules "$RULES" --input e.jsonl --state ref --shards 2 --alerts x 2>mismatch2.txt
st2=$?
set -e
expect_eq "other shard count status" "$st" 1
grep -q "was made with --shards 4" mismatch.txt || { cat mismatch.txt; fail "no message on shard count"; }
expect_eq "unsharded state with --shards" "$st2" 1
# A sharded state is refused without --shards too, and shard directories left by a start that
# failed before reading anything (no DIR/shards yet) do not block the next start.
set +e
"$TW" run --rules "$RULES" --input e.jsonl --state s4-e.jsonl --alerts x 2>noshards.txt
st4=$?
set -e
expect_eq "sharded state without --shards" "$st4" 1
grep -q "was made with --shards" noshards.txt || { cat noshards.txt; fail "no message without --shards"; }
mkdir -p partial/shard-0
"$TW" run --rules "$RULES" --input e.jsonl --state partial --shards 2 --no-sync --alerts p.jsonl 2>partial.txt \
  || { cat partial.txt; fail "a directory left by a failed start was refused"; }
expect_eq "layout marker" "$(cat partial/shards)" "2 fnv1a64"
# A state whose marker names no hash was made by an earlier version (another key hash): refused.
mkdir -p old/shard-0 old/shard-1 && echo 2 > old/shards
set +e
"$TW" run --rules "$RULES" --input e.jsonl --state old --shards 2 --no-sync --alerts o.jsonl 2>old.txt
st5=$?
set -e
expect_eq "state of an earlier key hash" "$st5" 1
grep -q "earlier tutorwatch that placed keys on shards with another hash" old.txt \
  || { cat old.txt; fail "no message for a state of another key hash"; }
# Serving with shards: the same alerts as a file run; a reload reaches every shard.
p_in=$(free_port)
"$TW" run --rules "$RULES" --listen "tcp://127.0.0.1:$p_in" --shards 2 --state live --no-sync \
  --alerts live.jsonl 2>engine.log &
engine=$!
trap 'kill -9 $engine 2>/dev/null || true' EXIT
"$TW" send --connect "tcp://127.0.0.1:$p_in" e.msgpack 2>/dev/null
want=$(wc -l < ref.sorted)
for _ in $(seq 1 300); do # bounded: 30 s
  [ "$(wc -l < live.jsonl 2>/dev/null || echo 0)" -ge "$want" ] && break
  sleep 0.1
done
"$TW" reload --state live > reload.out 2>&1 || { cat reload.out engine.log; fail "reload of a sharded engine failed"; }
grep -q "keep state" reload.out || { cat reload.out; fail "sharded reload did not keep state"; }
kill -TERM $engine
wait $engine || { cat engine.log; fail "sharded engine did not exit 0"; }
trap - EXIT
sort live.jsonl | cmp -s - ref.sorted || { cat engine.log; fail "sharded serving gave other alerts"; }
echo "shards: same alerts for 1, 2, 4 shards, shuffled input, kills and serving"
