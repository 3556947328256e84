#!/usr/bin/env bash
# replay's progress line (events, rate, ETA, alerts) appears on a terminal and not on a pipe or
# file; it goes to stderr, so the alerts are the same bytes either way.
. "$(dirname "$0")/lib.sh"
command -v script >/dev/null || fail "script(1) is needed to give the replay a terminal"
"$TW" gen --institutions 40 --days 30 --seed 9 --out e.jsonl 2>/dev/null
"$TW" run --rules "$RULES" --input e.jsonl --state s --no-sync --record rec --alerts live.jsonl 2>/dev/null
# Under a pseudo-terminal (script -q -c), stderr is a terminal.
script -q -e -c "'$TW' replay --rules '$RULES' --record rec --alerts tty.jsonl" /dev/null > typescript \
  || fail "replay under a terminal failed: $(cat typescript)"
grep -q "ETA" typescript || fail "no progress line on a terminal: $(cat typescript)"
grep -q "events/s" typescript || fail "no rate in the progress line"
grep -q "alerts" typescript || fail "no alert count in the progress line"
grep -q "100%" typescript || fail "the progress line does not end at 100%"
# On a file (not a terminal): none.
"$TW" replay --rules "$RULES" --record rec --alerts pipe.jsonl 2>pipe.err || fail "replay failed"
grep -q "ETA" pipe.err && fail "a progress line on a file: $(cat pipe.err)"
"$TW" replay --rules "$RULES" --record rec --alerts - 2>&1 | cat > piped.out
grep -q "ETA" piped.out && fail "a progress line on a pipe"
cmp -s tty.jsonl pipe.jsonl || fail "the alerts differ with and without a terminal"
cmp -s tty.jsonl live.jsonl || fail "the alerts differ from the live ones"
# --no-progress on a terminal: none; --progress on a file: forced.
script -q -e -c "'$TW' replay --rules '$RULES' --record rec --no-progress --alerts /dev/null" /dev/null > ts2
grep -q "ETA" ts2 && fail "--no-progress still drew the progress line"
"$TW" replay --rules "$RULES" --record rec --progress --alerts /dev/null 2>forced.err
grep -q "ETA" forced.err || fail "--progress did not draw the progress line"
# --input: the fraction follows the bytes read, and reaches 100%.
script -q -e -c "'$TW' replay --rules '$RULES' --input e.jsonl --alerts in.jsonl" /dev/null > ts3 \
  || fail "replay --input under a terminal failed"
grep -q "ETA" ts3 && grep -q "100%" ts3 || fail "no progress line for --input: $(cat ts3)"
# A closed output (| head) or an interrupt: the private state is removed all the same.
mkdir tmp
TMPDIR="$PWD/tmp" "$TW" replay --rules "$RULES" --record rec --alerts - 2>/dev/null | head -1 > first.jsonl || true
[ -s first.jsonl ] || fail "no alert before the pipe closed"
[ -z "$(ls tmp)" ] || fail "a replay whose output closed left its state behind: $(ls tmp)"
TMPDIR="$PWD/tmp" "$TW" replay --rules "$RULES" --record rec --diff "$RULES" --alerts /dev/null 2>int.log &
pid=$!
sleep 0.2
kill -INT "$pid" 2>/dev/null || true
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 130 ] || fail "an interrupted replay exited $status: $(cat int.log)"
[ "$status" -eq 0 ] || grep -q "interrupted" int.log || fail "no word of the interrupt: $(cat int.log)"
[ -z "$(ls tmp)" ] || fail "an interrupted replay left its state behind: $(ls tmp)"
echo ok
