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
# A rerun of part 2 on the continued state would double-count; this is what dedup (later) fixes.
echo "state continues across runs"
