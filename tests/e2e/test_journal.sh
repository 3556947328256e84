#!/usr/bin/env bash
# `tutorwatch journal`: prints the committed alert journal, `{"seq":N,` spliced before the alert's
# own bytes; --since and --count select; usage errors exit 2; a directory without state exits 1
# and is never created; it reads a state while an engine serves on it.
. "$(dirname "$0")/lib.sh"
g="$TW_SOURCE_DIR/tests/golden/basic"

# --help and usage errors.
"$TW" journal --help > help.txt || fail "--help did not exit 0"
grep -q "usage: tutorwatch journal --state DIR" help.txt || fail "--help does not show the usage"
"$TW" --help | grep -q "journal" || fail "tutorwatch --help does not list journal"
for args in "" "--since 3" "--state" "--state s --since -1" "--state s --since x" \
  "--state s --count 0" "--state s --count 5x" "--state s extra" "--state s --bogus"; do
  rc=0
  # shellcheck disable=SC2086
  "$TW" journal $args > out.txt 2> err.txt || rc=$?
  expect_eq "exit status of 'journal $args'" "$rc" 2
  [ -s err.txt ] || fail "'journal $args' said nothing on stderr"
  [ ! -s out.txt ] || fail "'journal $args' printed on stdout"
done

# No state: a clear error, exit 1, and nothing created.
rc=0
"$TW" journal --state missing 2> err.txt || rc=$?
expect_eq "exit status for a missing directory" "$rc" 1
grep -q "no state directory 'missing'" err.txt || { cat err.txt; fail "unclear message for a missing directory"; }
[ ! -e missing ] || fail "journal created the state directory"
mkdir empty
rc=0
"$TW" journal --state empty 2> err.txt || rc=$?
expect_eq "exit status for an empty directory" "$rc" 1
grep -q "holds no tutorwatch state" err.txt || { cat err.txt; fail "unclear message for an empty directory"; }
[ -z "$(ls -A empty)" ] || fail "journal wrote into an empty directory: $(ls -A empty)"
: > notadir
rc=0
"$TW" journal --state notadir 2> err.txt || rc=$?
expect_eq "exit status for a file given as the state" "$rc" 1

# The whole journal: seq 1..N in order, and without the seq key it is the alerts file, byte for byte.
"$TW" run --rules "$RULES" --input "$g/events.jsonl" --state st --alerts alerts.jsonl 2>/dev/null
"$TW" journal --state st > all.jsonl
n=$(wc -l < "$g/expected-alerts.jsonl")
expect_eq "journal lines" "$(wc -l < all.jsonl)" "$n"
expect_eq "sequence numbers" "$(sed -E 's/^\{"seq":([0-9]+),.*/\1/' all.jsonl | tr '\n' ' ')" \
  "$(seq 1 "$n" | tr '\n' ' ')"
sed -E 's/^\{"seq":[0-9]+,/{/' all.jsonl | cmp -s - "$g/expected-alerts.jsonl" \
  || fail "journal without its seq keys differs from the expected alerts"
python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' all.jsonl \
  || fail "a journal line is not JSON"

# --since and --count.
"$TW" journal --state st --since 3 > since3.jsonl
diff <(tail -n +4 all.jsonl) since3.jsonl || fail "--since 3 is not the journal after line 3"
"$TW" journal --state st --since 2 --count 3 > window.jsonl
diff <(sed -n 3,5p all.jsonl) window.jsonl || fail "--since 2 --count 3 is not lines 3-5"
"$TW" journal --state st --count 1 > first.jsonl
diff <(head -n 1 all.jsonl) first.jsonl || fail "--count 1 is not the first line"
rc=0
"$TW" journal --state st --since "$n" > none.jsonl 2> none.err || rc=$?
expect_eq "exit status past the end" "$rc" 0
[ ! -s none.jsonl ] || fail "--since the last seq printed something"
grep -q "no alert after sequence $n" none.err || { cat none.err; fail "no note for an empty result"; }
"$TW" journal --state st --since 18446744073709551615 > /dev/null 2>&1 || fail "--since UINT64_MAX failed"
rc=0
"$TW" journal --state st --since 18446744073709551616 > /dev/null 2>&1 || rc=$?
expect_eq "--since beyond 64 bits" "$rc" 2
# A closed stdout neither crashes nor lets LMDB take descriptor 1 (every command opens /dev/null
# on closed standard descriptors first): the state stays readable, and so does a run's.
rc=0
"$TW" journal --state st >&- 2> closed.err || rc=$?
expect_eq "exit status with stdout closed" "$rc" 0
"$TW" run --rules "$RULES" --input "$TW_SOURCE_DIR/tests/golden/basic/events.jsonl" --state closed-st >&- 2>closed-run.err \
  || { cat closed-run.err; fail "run with stdout closed failed"; }
expect_eq "journal of a run made with stdout closed" \
  "$("$TW" journal --state closed-st | wc -l)" "$(wc -l < "$TW_SOURCE_DIR/tests/golden/basic/expected-alerts.jsonl")"
echo "journal: selection, errors and splicing work"

# Reading while an engine serves on the same state (LMDB: one writer, many readers across
# processes). Each read is a snapshot of what was committed: a prefix of the final journal.
"$TW" gen --institutions 1500 --days 8 --seed 9 --out e.jsonl 2>/dev/null
split -n l/8 -d e.jsonl chunk-
# The reference: the same events from a file.
"$TW" run --rules "$RULES" --input e.jsonl --state file --no-sync --alerts /dev/null 2>/dev/null
"$TW" journal --state file > file-journal.jsonl
n_file=$(wc -l < file-journal.jsonl)
p_in=$(free_port)
# A day of allowed lateness keeps the generator's own disorder inside the reorder buffer, so the
# served journal must equal the file run's byte for byte. A pause between chunks (a loaded
# machine) must not release the buffer early either: --idle-flush 10s.
"$TW" run --rules "$RULES" --listen "tcp://127.0.0.1:$p_in" --state live --no-sync \
  --allowed-lateness 1d --idle-flush 10s --alerts live-alerts.jsonl --dead-letter live-dl.jsonl 2>engine.log &
engine=$!
sender=""
trap 'kill -9 $engine $sender 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q listening engine.log && break; sleep 0.1; done # bounded: 10 s
grep -q listening engine.log || { cat engine.log; fail "engine did not start listening"; }
reads=0 nonempty=0
read_journal() {
  reads=$((reads + 1))
  "$TW" journal --state live > "live-$reads.jsonl" 2> "live-$reads.err" \
    || { cat "live-$reads.err" engine.log; fail "journal failed while the engine serves (read $reads)"; }
  [ -s "live-$reads.jsonl" ] && nonempty=$((nonempty + 1))
  true
}
# One connection carries the chunks in order, with pauses between them (shorter than
# --idle-flush): separate connections would be interleaved by the PULL socket, and a lagging
# engine could then see a chunk's tail more than the allowed lateness behind the next chunk.
( for c in chunk-*; do cat "$c"; sleep 0.4; done ) \
  | "$TW" send --connect "tcp://127.0.0.1:$p_in" --timeout-ms 5000 - 2>>send.log &
sender=$!
while kill -0 $sender 2>/dev/null; do # read the journal again and again while the engine serves
  read_journal
  sleep 0.2
done
wait $sender || { cat send.log; fail "send failed"; }
sender=""
read_journal
# `send` returns once ZeroMQ took the messages, not once the engine processed them, and SIGTERM
# leaves what is still queued: wait (bounded) until the journal holds every alert of the file run.
for _ in $(seq 1 300); do # 30 s
  [ "$("$TW" journal --state live 2>/dev/null | wc -l)" -ge "$n_file" ] && break
  sleep 0.1
done
kill -TERM $engine
for _ in $(seq 1 100); do kill -0 $engine 2>/dev/null || break; sleep 0.1; done
wait $engine || { cat engine.log; fail "engine did not exit 0 on SIGTERM"; }
trap - EXIT
"$TW" journal --state live > live-final.jsonl
nf=$(wc -l < live-final.jsonl)
[ "$nf" -gt 0 ] || { cat engine.log; fail "the served engine journaled no alert"; }
for ((i = 1; i <= reads; i++)); do
  f=live-$i.jsonl
  cmp -s "$f" <(head -n "$(wc -l < "$f")" live-final.jsonl) \
    || fail "$f, read while the engine served, is not a prefix of the final journal"
done
# Served over ZeroMQ, the stream gives the journal that a file run gives.
cmp -s file-journal.jsonl live-final.jsonl \
  || fail "the served engine's journal differs from a file run's on the same events"
sed -E 's/^\{"seq":[0-9]+,/{/' live-final.jsonl | cmp -s - live-alerts.jsonl \
  || fail "served engine: alerts file differs from the journal"
echo "journal read $reads times while the engine served ($nonempty non-empty), final $nf alerts"
