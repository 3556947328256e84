#!/usr/bin/env bash
# SIGTERM stops a run busy with scheduled sweeps (an `every: 1s` rule over days of event time is
# thousands of sweeps per file) between two sweeps: exit 0 within seconds, "interrupted" said,
# and a second run on the same state goes on from where it stopped (it reads on, not from 0).
. "$(dirname "$0")/lib.sh"
cat > rules.yaml <<'YAML'
version: 1
aggregates:
  lessons_all: {on: [consumption], by: institution_id, fn: count(), window: all}
rules:
  - name: never
    every: 1s
    by: institution_id
    when: lessons_all < 0
    severity: low
    cooldown: 1d
YAML
"$TW" gen --institutions 50 --days 10 --out g.jsonl 2>/dev/null
"$TW" run --rules rules.yaml --input g.jsonl --state st --no-sync --alerts /dev/null 2>log1 &
pid=$!
sleep 2
kill -TERM $pid
stopped=0
for _ in $(seq 1 100); do # bounded: 10 s
  if ! kill -0 $pid 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
[ $stopped = 1 ] || { kill -9 $pid; cat log1; fail "still sweeping 10 s after SIGTERM"; }
wait $pid || { cat log1; fail "an interrupted run did not exit 0"; }
grep -q "interrupted; committing" log1 || { cat log1; fail "no interruption reported"; }
# The second run resumes after what the first committed.
"$TW" run --rules rules.yaml --input g.jsonl --state st --no-sync --alerts /dev/null 2>log2 &
pid=$!
sleep 1
kill -TERM $pid
wait $pid || { cat log2; fail "the second run did not exit 0"; }
grep -q "resuming after it" log2 || { cat log1 log2; fail "the second run did not resume"; }
echo ok
