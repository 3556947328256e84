#!/usr/bin/env bash
# Scheduled rules (`every`) and case 008: an absence rule ("no lesson for N") fires when event time
# passes the deadline. In replay, only event time moves it: the rule fires once a later event
# carries time past the deadline, and never at the end of an input that stops before it. Serving,
# an idle live stream's watermark follows the wall clock, so the rule fires with nothing arriving.
. "$(dirname "$0")/lib.sh"
cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" schema.yaml
cat > rules.yaml <<'YAML'
version: 1
aggregates:
  lessons_all: {on: [consumption], by: institution_id, fn: count(), window: all}
  lessons_3s: {on: [consumption], by: institution_id, fn: count(), window: 3s}
rules:
  - name: classes_stopped
    every: 1s
    by: institution_id
    when: lessons_all > 0 and lessons_3s == 0
    severity: high
    cooldown: 1h
    message: "no lesson for 3 s after {lessons_all} lessons"
YAML
A=52440106MJL176301K
B=52110105MJB0000256
c() { echo '{"event_id":"'$1'","type":"consumption","ts":'$2',"institution_id":"'$3'","region":"'$4'","student_id":"S1","course_id":"C","amount_fen":100,"class_hours":1}'; }
t0=1740794400500 # 2025-03-01T10:00:00.500+08:00
# Replay: B's event 10 s later moves event time past A's deadline.
{ c l1 $t0 $A 440106; c l2 $((t0 + 10000)) $B 110105; } > two.jsonl
"$TW" run --rules rules.yaml --input two.jsonl --state r1 --alerts a2.jsonl 2>log2.txt
expect_eq "replay alerts" "$(jq -r '[.rule, .key, .region, .event_time] | @tsv' a2.jsonl)" \
  "$(printf 'classes_stopped\t%s\t440106\t2025-03-01T10:00:04.000+08:00' $A)"
# Shards sweep up to the newest event of the whole input, whichever shard saw it.
for n in 2 3 4; do
  "$TW" run --rules rules.yaml --input two.jsonl --state "sh$n" --shards $n --alerts "as$n.jsonl" 2>/dev/null
  cmp a2.jsonl "as$n.jsonl" || fail "--shards $n changed the scheduled alert"
done
# ... and without it, time stops with the input: no alert.
c l1 $t0 $A 440106 > one.jsonl
"$TW" run --rules rules.yaml --input one.jsonl --state r2 --alerts a1.jsonl 2>/dev/null
[ ! -s a1.jsonl ] || fail "replay fired although event time never passed the deadline"
# Same alert after a restart in the middle (the sweep clock is kept with the state).
head -n 1 two.jsonl > part.jsonl
"$TW" run --rules rules.yaml --input part.jsonl --state r3 --alerts a3.jsonl 2>/dev/null
cp two.jsonl part.jsonl
"$TW" run --rules rules.yaml --input part.jsonl --state r3 --alerts a3.jsonl 2>/dev/null
cmp a2.jsonl a3.jsonl || fail "a restart changed the scheduled alert"

# Two scheduled rules due at the same time sweep together: alerts come out institution by
# institution (key order), each institution's rules in file order (docs/rules.md).
cat > two_rules.yaml <<'YAML'
version: 1
aggregates:
  lessons_all: {on: [consumption], by: institution_id, fn: count(), window: all}
  lessons_3s: {on: [consumption], by: institution_id, fn: count(), window: 3s}
rules:
  - {name: z_stopped, every: 1s, by: institution_id, when: lessons_all > 0 and lessons_3s == 0, severity: high, cooldown: 1h}
  - {name: a_stopped, every: 1s, by: institution_id, when: lessons_all > 0 and lessons_3s == 0, severity: low, cooldown: 1h}
YAML
{ c l1 $t0 $A 440106; c l0 $((t0 + 100)) $B 110105; c l2 $((t0 + 10000)) $B 110105; } > three.jsonl
"$TW" run --rules two_rules.yaml --input three.jsonl --state r4 --alerts a4.jsonl 2>/dev/null
expect_eq "sweep order" "$(jq -r '[.rule, .key] | @tsv' a4.jsonl)" \
  "$(printf 'z_stopped\t%s\na_stopped\t%s\nz_stopped\t%s\na_stopped\t%s' $B $B $A $A)"

# Serving (case 008): one lesson now, then nothing; the alert comes from the wall clock.
p_in=$(free_port)
"$TW" run --rules rules.yaml --listen "tcp://127.0.0.1:$p_in" --state live --no-sync \
  --allowed-lateness 0s --alerts live.jsonl 2>engine.log &
engine=$!
trap 'kill -9 $engine 2>/dev/null || true' EXIT
now=$(date +%s%3N)
c live1 "$now" $A 440106 > now.jsonl
"$TW" send --connect "tcp://127.0.0.1:$p_in" now.jsonl 2>/dev/null
for _ in $(seq 1 150); do # bounded: 15 s
  [ -s live.jsonl ] && break
  sleep 0.1
done
kill -TERM $engine
wait $engine || true
trap - EXIT
[ -s live.jsonl ] || { cat engine.log; fail "case 008: no alert while the live stream was idle"; }
fired=$(jq -r '.event_time' live.jsonl | head -1)
echo "idle live stream: classes_stopped fired at $fired for a lesson at $now ms"
expect_eq "live alert rule" "$(jq -r .rule live.jsonl | head -1)" classes_stopped
echo "scheduled rules: replay follows event time, live follows the wall clock when idle"
