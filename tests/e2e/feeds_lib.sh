# Helpers for the feed, key and history end-to-end tests; sourced after lib.sh, not run.
# Institutions come from a small generated sample (real credit codes and regions); the events
# the tests send are written here, so each test knows exactly which alerts to expect.

# sample_institutions: write insts.txt, one "credit_code region" per line, sorted.
sample_institutions() {
  "$TW" gen --institutions 300 --days 1 --seed 5 --out sample.jsonl 2>/dev/null
  jq -r '.institution_id + " " + .region' sample.jsonl | sort -u > insts.txt
}

# inst_in PREFIX N: the Nth institution (code and region) whose region starts with PREFIX.
inst_in() {
  awk -v p="$1" 'index($2, p) == 1' insts.txt | sed -n "${2}p"
}

# over_cap EVENT_ID CODE REGION DAY: one prepaid payment over the 5,000-yuan cap, which raises
# one prepaid_over_cap alert (the rule has no cooldown). DAY (1-28) is its day in June 2025.
over_cap() {
  printf '{"event_id":"%s","type":"payment","ts":"2025-06-%02dT10:00:00+08:00","institution_id":"%s","region":"%s","student_id":"S1","course_id":"C-1","amount_fen":600000,"class_hours":10,"service_days":30,"channel":"supervised","list_price_fen":600000}\n' \
    "$1" "$4" "$2" "$3"
}

# start_engine LOG ARGS...: run the engine in the background (pid in $engine) and wait, bounded,
# until it listens.
start_engine() {
  local log=$1
  shift
  "$TW" run --rules "$RULES" --no-sync --allowed-lateness 0s "$@" 2>"$log" &
  engine=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$log" && return 0
    kill -0 $engine 2>/dev/null || break
    sleep 0.1
  done
  cat "$log"
  fail "engine did not start"
}

# stop_engine LOG: SIGTERM, and expect exit 0.
stop_engine() {
  kill -TERM $engine
  wait $engine || { cat "$1"; fail "engine did not exit 0 on SIGTERM"; }
}

# ports N: N distinct free loopback ports in $P1 ... $PN.
ports() {
  local got=" " i=1 p
  while [ $i -le "$1" ]; do
    p=$(free_port)
    case "$got" in *" $p "*) continue ;; esac
    got="$got$p "
    eval "P$i=$p"
    i=$((i + 1))
  done
}
