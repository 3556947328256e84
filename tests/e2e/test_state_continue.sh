#!/usr/bin/env bash
# A second run on the same --state continues from the first: splitting the golden stream in two
# runs gives exactly the alerts of one run over the whole stream (windows, all-time sums and
# cooldowns carry over through LMDB).
. "$(dirname "$0")/lib.sh"
g="$TW_SOURCE_DIR/tests/golden/basic"
head -n 20 "$g/events.jsonl" > part1.jsonl
tail -n +21 "$g/events.jsonl" > part2.jsonl
"$TW" run --rules "$RULES" --input part1.jsonl --state st --alerts alerts.jsonl 2>log1.txt
"$TW" run --rules "$RULES" --input part2.jsonl --state st --alerts alerts.jsonl 2>log2.txt
diff -u "$g/expected-alerts.jsonl" alerts.jsonl || fail "split run differs from one run"
[ -s st/data.mdb ] || fail "no LMDB data file in the state directory"

echo "state continues across runs"

# The input position is committed with the state: running the same file again on the same state
# reads nothing twice, a file that has grown is read from where the last run stopped, and a
# different file under the same name is read from its start.
rm -rf st2 && : > a2.jsonl
"$TW" run --rules "$RULES" --input "$g/events.jsonl" --state st2 --alerts a2.jsonl 2>/dev/null
"$TW" run --rules "$RULES" --input "$g/events.jsonl" --state st2 --alerts a2.jsonl 2>again.txt
grep -q "0 events read" again.txt || { cat again.txt; fail "a rerun of the same file read events again"; }
grep -q "resuming after it" again.txt || fail "the rerun did not say it resumed"
diff -u "$g/expected-alerts.jsonl" a2.jsonl || fail "a rerun changed the alerts"

rm -rf st3 && : > a3.jsonl
head -n 13 "$g/events.jsonl" > growing.jsonl
"$TW" run --rules "$RULES" --input growing.jsonl --state st3 --alerts a3.jsonl 2>/dev/null
cp "$g/events.jsonl" growing.jsonl
"$TW" run --rules "$RULES" --input growing.jsonl --state st3 --alerts a3.jsonl 2>grow.txt
grep -q "13 events read" grow.txt || { cat grow.txt; fail "the grown file was not resumed at line 14"; }
diff -u "$g/expected-alerts.jsonl" a3.jsonl || fail "resuming a grown file changed the alerts"

# Same for msgpack: records, not lines.
"$TW" gen --institutions 30 --days 6 --seed 3 --out m.msgpack 2>/dev/null
"$TW" run --rules "$RULES" --input m.msgpack --state st4 --alerts m1.jsonl 2>/dev/null
"$TW" run --rules "$RULES" --input m.msgpack --state st4 --alerts m1.jsonl 2>m2.txt
grep -q "0 events read" m2.txt || { cat m2.txt; fail "a rerun of the msgpack file read events again"; }

# Another file under the same path is read whole.
"$TW" gen --institutions 30 --days 6 --seed 4 --out m.msgpack 2>/dev/null
"$TW" run --rules "$RULES" --input m.msgpack --state st4 --alerts m1.jsonl 2>m3.txt
grep -q "resuming" m3.txt && { cat m3.txt; fail "a different file was taken for the processed one"; }
grep -q " 0 events read" m3.txt && fail "the different file was not read"
echo "input position resumes"

# A file cut inside a record (still being written): the partial record is neither processed nor
# dead-lettered, and the run on the grown file reads it whole. JSON Lines and msgpack.
"$TW" gen --institutions 200 --days 6 --seed 8 --out full.jsonl 2>/dev/null
"$TW" gen --institutions 200 --days 6 --seed 8 --out full.msgpack 2>/dev/null
for ext in jsonl msgpack; do
  rm -rf cut-$ext cutref-$ext
  head -c 500037 full.$ext > cut.$ext
  "$TW" run --rules "$RULES" --input cut.$ext --state cut-$ext --alerts cut-a.$ext.out \
    --dead-letter cut-dl.$ext.out 2>cut1.$ext.log
  grep -q "incomplete last record" cut1.$ext.log || { cat cut1.$ext.log; fail "$ext: the cut record was not left for later"; }
  cp full.$ext cut.$ext
  "$TW" run --rules "$RULES" --input cut.$ext --state cut-$ext --alerts cut-a.$ext.out \
    --dead-letter cut-dl.$ext.out 2>cut2.$ext.log
  [ ! -s cut-dl.$ext.out ] || { head -2 cut-dl.$ext.out; fail "$ext: the cut record was dead-lettered"; }
  "$TW" run --rules "$RULES" --input full.$ext --state cutref-$ext --alerts cut-ref.$ext.out 2>/dev/null
  cmp cut-a.$ext.out cut-ref.$ext.out || fail "$ext: alerts of the cut-then-grown file differ"
  total=$(( $(grep -o '[0-9]* accepted' cut1.$ext.log | cut -d' ' -f1) + $(grep -o '[0-9]* accepted' cut2.$ext.log | cut -d' ' -f1) ))
  expect_eq "$ext events accepted over both runs" "$total" "$(grep -c . full.jsonl)"
done
echo "a record cut at the end of a growing file is read whole later"
