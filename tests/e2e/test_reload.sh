#!/usr/bin/env bash
# Hot reload: SIGHUP makes a serving engine load its rule file again. An aggregate whose
# definition is unchanged keeps its state, a new one starts empty (and the log says which); a file
# that does not compile is refused with its located error and the old rules go on.
. "$(dirname "$0")/lib.sh"
cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" schema.yaml
cat > rules.yaml <<'YAML'
version: 1
aggregates:
  complaints_all: {on: [complaint], by: institution_id, fn: count(), window: all}
rules:
  - name: complaint_count
    on: [complaint]
    by: institution_id
    when: complaints_all >= 1
    severity: info
YAML
inst=52440106MJL176301K
c() { echo '{"event_id":"'$1'","type":"complaint","ts":"2025-03-0'$2'T10:00:00+08:00","institution_id":"'$inst'","region":"440106","complaint_id":"'$1'","category":"service","text":"x"}'; }
# Wait until the alerts file has $1 lines (bounded: 20 s).
wait_alerts() {
  for _ in $(seq 1 200); do
    [ "$(wc -l < alerts.jsonl 2>/dev/null || echo 0)" -ge "$1" ] && return 0
    sleep 0.1
  done
  cat engine.log
  fail "expected $1 alerts, got $(wc -l < alerts.jsonl)"
}
p_in=$(free_port)
"$TW" run --rules rules.yaml --listen "tcp://127.0.0.1:$p_in" --state st --no-sync \
  --allowed-lateness 0s --alerts alerts.jsonl 2>engine.log &
engine=$!
trap 'kill -9 $engine 2>/dev/null || true' EXIT
{ c k1 1; c k2 2; c k3 3; } > part1.jsonl
"$TW" send --connect "tcp://127.0.0.1:$p_in" part1.jsonl 2>/dev/null
wait_alerts 3

cat >> rules.yaml <<'YAML'
  - name: complaint_week
    on: [complaint]
    by: institution_id
    when: complaints_7d >= 1
    severity: low
YAML
sed -i 's/^aggregates:$/aggregates:\n  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}/' rules.yaml
kill -HUP $engine
for _ in $(seq 1 100); do grep -q "reloaded" engine.log && break; sleep 0.1; done
grep -q "keep state: complaints_all" engine.log || { cat engine.log; fail "reload did not keep the unchanged aggregate"; }
grep -q "start empty: complaints_7d" engine.log || { cat engine.log; fail "reload did not report the new aggregate"; }
{ c k4 4; c k5 5; } > part2.jsonl
"$TW" send --connect "tcp://127.0.0.1:$p_in" part2.jsonl 2>/dev/null
wait_alerts 7

echo "rules: [this is not: valid" >> rules.yaml
# `tutorwatch reload` does what SIGHUP does and prints the engine's answer.
set +e
"$TW" reload --state st > reload.out 2> reload.err
st_reload=$?
set -e
expect_eq "reload of a broken file" "$st_reload" 1
grep -q "refused, the old rules go on: rules.yaml:[0-9]*:[0-9]*:" reload.err \
  || { cat reload.out reload.err; fail "reload did not print the located error"; }
grep -q "rules.yaml:[0-9]*:[0-9]*: .* the old rules go on\|refused, the old rules go on: .*rules.yaml:[0-9]*:[0-9]*:" engine.log \
  || { cat engine.log; fail "a broken rule file was not refused with its location"; }
c k6 6 > part3.jsonl
"$TW" send --connect "tcp://127.0.0.1:$p_in" part3.jsonl 2>/dev/null
wait_alerts 9
kill -TERM $engine
wait $engine || { cat engine.log; fail "engine did not exit 0"; }
trap - EXIT
[ ! -e st/engine.pid ] || fail "engine.pid left behind"
set +e
"$TW" reload --state st 2>noengine.err
st_none=$?
set -e
expect_eq "reload with no engine" "$st_none" 1
grep -q "no engine is serving" noengine.err || fail "no message when no engine serves"
# A stale engine.pid (the engine was killed with -9) may name an unrelated process by now: a
# reload must signal nothing. The engine's lock on the file is what proves it is alive.
sleep 30 &
dummy=$!
echo "$dummy" > st/engine.pid
set +e
"$TW" reload --state st 2>stale.err
st_stale=$?
set -e
alive=0
kill -0 "$dummy" 2>/dev/null && alive=1
kill "$dummy" 2>/dev/null || true
expect_eq "reload with a stale pid" "$st_stale" 1
expect_eq "unrelated process left alone" "$alive" 1
grep -q "stale" stale.err || { cat stale.err; fail "no message about the stale pid file"; }
# complaint_count went on counting across the reload; complaint_week started from zero after it.
expect_eq "complaints_all per alert" \
  "$(jq -r 'select(.rule == "complaint_count") | .values.complaints_all' alerts.jsonl | tr '\n' ' ')" \
  "1 2 3 4 5 6 "
expect_eq "complaints_7d per alert" \
  "$(jq -r 'select(.rule == "complaint_week") | .values.complaints_7d' alerts.jsonl | tr '\n' ' ')" \
  "1 2 3 "
echo "reload: state kept where unchanged, new aggregates start empty, broken files refused"
