# Helpers for the NATS JetStream tests (docs/scaling.md); sourced after lib.sh, not run.
# nats_single / nats_cluster start private servers on free loopback ports (killed at exit);
# start_engine runs `tutorwatch run --nats` in the background; nats.py reads the servers over the
# plain NATS protocol and the JetStream API, so the tests need no NATS client.
command -v nats-server >/dev/null || fail "nats-server is not installed (scripts/debian-packages.txt)"

NATS_PIDS=()
declare -A ENGINE
nats_cleanup() {
  for p in "${ENGINE[@]}" "${NATS_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap nats_cleanup EXIT

cp "$TW_SOURCE_DIR/scripts/natsctl.py" nats.py

# nats_single: one server with JetStream; sets NATS_URL and NATS_PORT.
nats_single() {
  NATS_PORT=$(free_port)
  NATS_URL="nats://127.0.0.1:$NATS_PORT"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TW_WORK/js" >nats.log 2>&1 &
  NATS_PIDS+=($!)
  python3 nats.py "$NATS_PORT" ready 2>/dev/null || { cat nats.log; fail "nats-server did not start"; }
}

# nats_cluster: three servers with JetStream in one cluster on loopback; sets NATS_URL (all
# three), NATS_PORTS, NATS_PIDS (in node order) and NATS_PORT (the first node's).
nats_cluster() {
  local client=() route=() i j routes
  for i in 0 1 2; do client[i]=$(free_port); route[i]=$(free_port); done
  NATS_PORTS=("${client[@]}")
  NATS_URL=""
  for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do
      [ "$j" = "$i" ] || routes="$routes${routes:+,}nats://127.0.0.1:${route[j]}"
    done
    nats-server -js -a 127.0.0.1 -p "${client[i]}" -sd "$TW_WORK/js$i" -n "n$i" \
      --cluster_name tw --cluster "nats://127.0.0.1:${route[i]}" --routes "$routes" \
      >"nats$i.log" 2>&1 &
    NATS_PIDS+=($!)
    NATS_URL="$NATS_URL${NATS_URL:+,}nats://127.0.0.1:${client[i]}"
  done
  NATS_PORT=${client[0]}
  for i in 0 1 2; do
    python3 nats.py "${client[i]}" ready 2>/dev/null ||
      { tail -n 5 nats*.log; fail "the NATS cluster did not elect a leader"; }
  done
}

# start_engine ID [ARGS...]: `run --nats` as engine ID on state st-ID, logging to ID.log.
start_engine() {
  local id=$1
  shift
  "$TW" run --rules "$RULES" --nats "$NATS_URL" --partitions "$P" --state "st-$id" --no-sync \
    --engine-id "$id" --dead-letter "dl-$id.jsonl" "$@" 2>"$id.log" &
  ENGINE[$id]=$!
}

# stop_engine ID: SIGTERM, and it must exit 0 (it gives its partitions up); an engine that died
# before (a crash, a sanitizer's report) fails the test with its log's end.
stop_engine() {
  kill -0 "${ENGINE[$1]}" 2>/dev/null || { tail -n 60 "$1.log"; fail "engine $1 exited before SIGTERM"; }
  kill -TERM "${ENGINE[$1]}"
  wait "${ENGINE[$1]}" || { cat "$1.log"; fail "engine $1 did not exit 0 on SIGTERM"; }
  unset "ENGINE[$1]"
}

# wait_for SECONDS WHAT CMD...: until CMD succeeds, polling every 0.2 s; fail after SECONDS.
wait_for() {
  local secs=$1 what=$2 t
  shift 2
  for t in $(seq 1 $((secs * 5))); do
    "$@" && return 0
    sleep 0.2
  done
  for id in "${!ENGINE[@]}"; do echo "--- $id.log"; tail -20 "$id.log"; done
  fail "waited $secs s for $what"
}

owners() { python3 nats.py "$NATS_PORT" owners "$P"; }
# owned_by ID N: ID holds exactly N partitions.
owned_by() { [ "$(owners | tr ' ' '\n' | grep -cx "$1")" = "$2" ]; }
all_owned() { ! owners | tr ' ' '\n' | grep -qx -- -; }
all_done() { [ "$(python3 nats.py "$NATS_PORT" left "$P")" = 0 ]; }
checkpoints_at_least() { [ "$(python3 nats.py "$NATS_PORT" count OBJ_tw-checkpoints)" -ge "$1" ]; }
alerts_at_least() { [ "$(python3 nats.py "$NATS_PORT" count ALERTS)" -ge "$1" ]; }

# two_part_stream: e.jsonl (100 institutions, 20 days, seed 3), want.jsonl (the alerts of a batch
# run over it), and part1.jsonl / part2.jsonl: the stream split at the night gap nearest the
# middle (the stream is in event-time order, days hours apart), so events sent in two parts are
# processed as one stream would be.
two_part_stream() {
  "$TW" gen --institutions 100 --days 20 --seed 3 --out e.jsonl 2>/dev/null
  "$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts want.jsonl 2>/dev/null
  local half
  half=$(jq -r '.ts' e.jsonl | python3 -c '
import sys, datetime
ts = [datetime.datetime.fromisoformat(l.strip()).timestamp() for l in sys.stdin]
mid = len(ts) // 2
best = max(range(1, len(ts)), key=lambda i: (ts[i] - ts[i - 1] > 6 * 3600, -abs(i - mid)))
print(best)')
  head -n "$half" e.jsonl >part1.jsonl
  tail -n +"$((half + 1))" e.jsonl >part2.jsonl
}

# check_alerts WANT.jsonl: ALERTS holds exactly the alerts of WANT: the same JSON, each once, each
# with Nats-Msg-Id = alert_id on tw.alerts.<region>.<severity>.
check_alerts() {
  python3 nats.py "$NATS_PORT" stream ALERTS >alerts.jsonl
  jq -r '.data' alerts.jsonl | sort >got.sorted
  sort "$1" >want.sorted
  diff -u want.sorted got.sorted || fail "the ALERTS stream differs from the batch run"
  expect_eq "alerts in ALERTS" "$(wc -l <alerts.jsonl)" "$(wc -l <"$1")"
  expect_eq "distinct alert ids" \
    "$(jq -r '.data | fromjson | .alert_id' alerts.jsonl | sort -u | wc -l)" "$(wc -l <"$1")"
  local bad
  bad=$(jq -r 'select(.msg_id != (.data | fromjson | .alert_id) or
          .subject != ("tw.alerts." + (.data | fromjson | .region + "." + .severity))) | .seq' \
    alerts.jsonl)
  [ -z "$bad" ] || fail "alerts without Nats-Msg-Id = alert_id or on the wrong subject: $bad"
}
