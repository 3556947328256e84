#!/usr/bin/env bash
# test_gen.sh: end-to-end checks of `tutorwatch gen` with the real binary ($TW): --help, usage
# errors (exit 2, nothing on stdout), determinism via cmp, --truth, format by extension, and the
# one-line summary on stderr. Small N and D, so it runs in a second or two.
set -u
: "${TW:?TW must name the tutorwatch binary}"
: "${TW_WORK:?TW_WORK must name a scratch directory}"
rm -rf "$TW_WORK" && mkdir -p "$TW_WORK" && cd "$TW_WORK" || exit 1

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# --help: exit 0, mentions every option and every injected problem
"$TW" gen --help >help.txt 2>help.err || fail "--help exit status $?"
for word in --institutions --days --seed --start --format --out --truth \
  over_cap unsupervised complaint_storm closure_with_balance split_orders training_loan \
  release_ahead escrow_drain collection_surge deep_discount classes_stop timeout_confirm \
  refund_backlog staff_exodus unchecked_teacher branch_closures runaway seasonal_surge \
  planned_closure; do
  grep -q -- "$word" help.txt || fail "--help does not mention $word"
done

# usage errors: exit 2, a message on stderr, nothing on stdout
expect_usage_error() {
  "$TW" gen "$@" >usage.out 2>usage.err
  local rc=$?
  [ "$rc" -eq 2 ] || fail "gen $* exited $rc, want 2"
  [ -s usage.err ] || fail "gen $* printed no message"
  [ ! -s usage.out ] || fail "gen $* wrote to stdout"
}
expect_usage_error --days 3
expect_usage_error --institutions 3
expect_usage_error --institutions 0 --days 3
expect_usage_error --institutions abc --days 3
expect_usage_error --institutions 5 --days 3 --bogus
expect_usage_error --institutions 5 --days 3 --format xml
expect_usage_error --institutions 5 --days 3 --start 2025-02-30
expect_usage_error --institutions 5 --days 3 --seed -1
expect_usage_error --institutions 5 --days
expect_usage_error --institutions 5 --days 3 --truth -

# --truth - with --out FILE: the truth goes to stdout
"$TW" gen --institutions 30 --days 10 --seed 42 --out g.jsonl --truth - >g.truth 2>/dev/null ||
  fail "--truth - failed"

# determinism: same arguments, same bytes (stdout and --out); another seed, other bytes
"$TW" gen --institutions 30 --days 10 --seed 42 >a.jsonl 2>a.err || fail "gen to stdout failed"
"$TW" gen --institutions 30 --days 10 --seed 42 --out b.jsonl --truth b.truth 2>b.err ||
  fail "gen --out failed"
"$TW" gen --institutions=30 --days=10 --seed=43 --out c.jsonl 2>/dev/null || fail "gen seed 43 failed"
cmp -s a.jsonl b.jsonl || fail "same seed gave different output"
cmp -s a.jsonl c.jsonl && fail "different seeds gave the same output"
[ "$(wc -l <a.jsonl)" -gt 500 ] || fail "too few events: $(wc -l <a.jsonl)"
head -c1 a.jsonl | grep -q '{' || fail "stdout does not start with an event"

# summary: one line on stderr with the event count and the problems
[ "$(wc -l <a.err)" -eq 1 ] || fail "summary is not one line"
grep -q "$(wc -l <a.jsonl | tr -d ' ') events" a.err || fail "summary count differs: $(cat a.err)"
grep -q "closure_with_balance 1" a.err || fail "summary lacks problems: $(cat a.err)"

# truth: one line per scenario institution (30 institutions: one of each of the 19 kinds, less
# those whose onset falls after the 10 days); each line names its scenario's rule family
[ "$(wc -l <b.truth)" -ge 15 ] || fail "truth has $(wc -l <b.truth) lines, want at least 15"
for p in over_cap unsupervised complaint_storm closure_with_balance runaway seasonal_surge; do
  grep -q "\"scenario\":\"$p\"" b.truth || fail "truth lacks $p"
done
grep -q '"scenario":"runaway","family":"runaway"' b.truth || fail "runaway family missing"
grep -q '"scenario":"seasonal_surge","family":"healthy"' b.truth || fail "look-alike not healthy"
grep -q '"scenario":"over_cap","family":"collection_caps","onset":"2025-03-' b.truth ||
  fail "over_cap line lacks its family or onset"
grep -q '"collapse":null' b.truth || fail "no scenario without a collapse"
while read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"institution_id":"\([0-9A-Z]*\)".*/\1/p')
  [ "${#id}" -eq 18 ] || fail "truth institution_id '$id' is not 18 characters"
  grep -q "\"institution_id\":\"$id\"" b.jsonl || fail "truth institution $id not in the stream"
done <b.truth

cmp -s b.truth g.truth || fail "--truth - differs from --truth FILE"

# msgpack: chosen by extension, deterministic, not JSON
"$TW" gen --institutions 30 --days 10 --seed 42 --out d.msgpack 2>/dev/null || fail "msgpack failed"
"$TW" gen --institutions 30 --days 10 --seed 42 --format msgpack >e.msgpack 2>/dev/null ||
  fail "--format msgpack failed"
cmp -s d.msgpack e.msgpack || fail "msgpack by extension differs from --format msgpack"
head -c1 d.msgpack | grep -q '{' && fail "msgpack output looks like JSON"
[ -s d.msgpack ] || fail "msgpack output empty"

# --start moves the dates
"$TW" gen --institutions 5 --days 2 --start 2024-12-31 >f.jsonl 2>/dev/null || fail "--start failed"
grep -q '"ts":"2024-12-31T' f.jsonl || fail "--start 2024-12-31 not honoured"
grep -q '"ts":"2025-01-01T' f.jsonl || fail "second day not 2025-01-01"
grep -vq '"ts":"202[45]-' f.jsonl && fail "dates outside the period"

# an output that cannot be opened: exit 1
"$TW" gen --institutions 5 --days 2 --out "$TW_WORK/no/such/dir/x.jsonl" 2>/dev/null
[ $? -eq 1 ] || fail "unwritable --out should exit 1"

# every example in docs/gen.md runs and succeeds
if [ -n "${TW_SOURCE_DIR:-}" ] && [ -f "$TW_SOURCE_DIR/docs/gen.md" ]; then
  examples=0
  while IFS= read -r cmd; do
    examples=$((examples + 1))
    # shellcheck disable=SC2086
    "$TW" ${cmd#tutorwatch } >example.out 2>example.err || fail "docs example failed: $cmd"
    [ "$(wc -l <example.err)" -eq 1 ] || fail "docs example summary not one line: $cmd"
  done < <(sed -n 's/^\$ \(tutorwatch gen .*\)$/\1/p' "$TW_SOURCE_DIR/docs/gen.md")
  [ "$examples" -ge 3 ] || fail "found $examples docs examples, want 3"
  [ -s truth.jsonl ] && [ -s events.msgpack ] || fail "docs examples did not write their files"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "test_gen.sh: ok"
