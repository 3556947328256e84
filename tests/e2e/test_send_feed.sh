#!/usr/bin/env bash
# test_send_feed.sh: the `send` and `feed` commands as a user runs them: help texts, usage errors
# (exit 2), unreadable input and an endpoint nobody listens on (exit 1, bounded time), an empty
# input (exit 0 with the summary line), and feed's clean exits on --timeout-ms and SIGTERM.
# The path send → engine → feed is covered once `run` exists; send's core (file → PUSH → PULL)
# and the PUB feed's prefix filtering are unit-tested in tests/unit/test_zmq.c.
set -u
: "${TW:?TW must name the tutorwatch binary}"
: "${TW_WORK:?TW_WORK must name a scratch directory}"
rm -rf "$TW_WORK" && mkdir -p "$TW_WORK"
fails=0

check() { # check DESCRIPTION EXPECTED_STATUS ACTUAL_STATUS
  if [ "$2" != "$3" ]; then
    echo "FAIL: $1: exit $3, expected $2"
    fails=$((fails + 1))
  else
    echo "ok: $1"
  fi
}

contains() { # contains DESCRIPTION FILE TEXT
  if grep -qF -- "$3" "$2"; then
    echo "ok: $1"
  else
    echo "FAIL: $1: '$3' not in $2:"
    cat "$2"
    fails=$((fails + 1))
  fi
}

# Help: exit 0, on stdout, explaining the options and the region prefixes.
"$TW" send --help >"$TW_WORK/send.help" 2>&1
check "send --help" 0 $?
contains "send --help names --connect" "$TW_WORK/send.help" "--connect ENDPOINT"
contains "send --help names --format" "$TW_WORK/send.help" "--format"
"$TW" feed --help >"$TW_WORK/feed.help" 2>&1
check "feed --help" 0 $?
contains "feed --help explains the province prefix" "$TW_WORK/feed.help" "--topic 44      Guangdong"
contains "feed --help explains the city prefix" "$TW_WORK/feed.help" "--topic 4401    Guangzhou"
contains "feed --help explains the county prefix" "$TW_WORK/feed.help" "--topic 440106  Tianhe"

# Usage errors: exit 2 with a message.
"$TW" send 2>"$TW_WORK/err"; check "send without --connect" 2 $?
contains "send says --connect is required" "$TW_WORK/err" "--connect ENDPOINT is required"
"$TW" send --connect 2>/dev/null; check "send --connect without a value" 2 $?
"$TW" send --connect ipc://x --format xml 2>"$TW_WORK/err"; check "send --format xml" 2 $?
contains "send names the bad format" "$TW_WORK/err" "unknown format 'xml'"
"$TW" send --connect ipc://x --timeout-ms -5 2>/dev/null; check "send --timeout-ms -5" 2 $?
"$TW" send --connect ipc://x a.jsonl b.jsonl 2>/dev/null; check "send with two files" 2 $?
"$TW" send --bogus 2>/dev/null; check "send --bogus" 2 $?
"$TW" feed 2>/dev/null; check "feed without --connect" 2 $?
"$TW" feed --connect ipc://x --count 0 2>/dev/null; check "feed --count 0" 2 $?
"$TW" feed --connect ipc://x --timeout-ms abc 2>/dev/null; check "feed --timeout-ms abc" 2 $?
"$TW" feed --connect ipc://x extra 2>/dev/null; check "feed with an extra argument" 2 $?

# Unreadable input: exit 1.
"$TW" send --connect "ipc://$TW_WORK/none.sock" "$TW_WORK/missing.jsonl" 2>"$TW_WORK/err"
check "send a missing file" 1 $?
contains "send names the missing file" "$TW_WORK/err" "missing.jsonl: no such file"

# Nobody listening: gives up after --timeout-ms instead of hanging.
printf '{"event_id":"p-1"}\n' >"$TW_WORK/one.jsonl"
start=$(date +%s%N)
"$TW" send --connect "ipc://$TW_WORK/none.sock" --timeout-ms 300 "$TW_WORK/one.jsonl" 2>"$TW_WORK/err"
check "send to an endpoint nobody listens on" 1 $?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
contains "send says no engine took events" "$TW_WORK/err" "no engine took events"
if [ "$elapsed_ms" -gt 5000 ]; then
  echo "FAIL: send took ${elapsed_ms} ms to give up (timeout 300 ms)"; fails=$((fails + 1))
fi

# Empty input from stdin: nothing to send, success, one summary line.
"$TW" send --connect "ipc://$TW_WORK/none.sock" --timeout-ms 300 - </dev/null 2>"$TW_WORK/err"
check "send empty stdin" 0 $?
contains "send prints its summary" "$TW_WORK/err" "sent 0 events (0 bytes) to ipc://$TW_WORK/none.sock in"

# feed: exits 0 after --timeout-ms without alerts, printing nothing.
"$TW" feed --connect "ipc://$TW_WORK/feed.sock" --topic 44 --timeout-ms 300 >"$TW_WORK/out" 2>&1
check "feed --timeout-ms with no publisher" 0 $?
if [ -s "$TW_WORK/out" ]; then echo "FAIL: feed printed something:"; cat "$TW_WORK/out"; fails=$((fails + 1)); fi

# feed: SIGTERM is a clean shutdown (exit 0), promptly.
"$TW" feed --connect "ipc://$TW_WORK/feed.sock" >"$TW_WORK/out" 2>&1 &
pid=$!
sleep 0.3
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  echo "FAIL: feed ignored SIGTERM"; kill -KILL "$pid"; fails=$((fails + 1))
fi
wait "$pid"
check "feed exits cleanly on SIGTERM" 0 $?

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all send/feed checks passed"
