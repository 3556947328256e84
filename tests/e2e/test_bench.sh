#!/usr/bin/env bash
# test_bench.sh: `tutorwatch bench` end to end on a tiny stream: --help, usage errors (exit 2),
# the table's sections on stdout, the shape and internal consistency of --json (every stage,
# ratio 1 for decode-only msgpack, the same alerts from every engine stage, ordered percentiles,
# histogram counts = alerts, memory figures present), --skip, --work cleanup, and --plot when
# gnuplot is installed. Never a timing: the figures depend on the machine and its load.
source "$TW_SOURCE_DIR/tests/e2e/lib.sh"

"$TW" bench --help >help.txt || fail "--help exit status"
for word in --quick --json --plot --rates --rate-seconds --mem-institutions --shards --skip --latency-no-sync; do
  grep -q -- "$word" help.txt || fail "--help does not mention $word"
done
"$TW" --help | grep -q '^  bench ' || fail "tutorwatch --help does not list bench"

expect_usage_error() {
  set +e
  "$TW" bench "$@" >usage.out 2>usage.err
  local rc=$?
  set -e
  [ "$rc" -eq 2 ] || fail "bench $* exited $rc, want 2"
  [ -s usage.err ] || fail "bench $* printed no message"
  [ ! -s usage.out ] || fail "bench $* wrote to stdout"
}
expect_usage_error --rates 0
expect_usage_error --rates 10000,
expect_usage_error --rates abc
expect_usage_error --shards 1
expect_usage_error --skip everything
expect_usage_error --mem-institutions 1,2,3,4,5
expect_usage_error --institutions 0
expect_usage_error extra-argument

# A tiny run of every part. Sizes are small so the sanitizer build finishes in seconds.
tiny=(--quick --institutions 12 --days 6 --seed 3 --rates 1500,3000 --rate-seconds 0.5
  --mem-institutions 8,16 --mem-days 1 --shards 2)
plot=()
if command -v gnuplot >/dev/null 2>&1; then plot=(--plot plots); fi
"$TW" bench "${tiny[@]}" --work work --json out.json "${plot[@]}" >table.txt 2>bench.err ||
  { cat bench.err >&2; fail "bench exited $?"; }

for line in "throughput stage" "decode only, msgpack" "decode only, JSON Lines" \
  "rules, state unsynced on" "engine, durable group commit, 1 shard" \
  "engine, durable group commit, 2 shards" "engine over ZeroMQ tcp, separate sender" \
  "offered/s" "institutions" "machine:"; do
  grep -q -- "$line" table.txt || fail "the table has no '$line'"
done
[ ! -e work/events.msgpack ] && [ ! -e work/events.jsonl ] || fail "the streams were not removed"

python3 - out.json <<'EOF' || fail "the JSON report is not what it should be"
import json, sys
d = json.load(open(sys.argv[1]))
def check(cond, what):
    if not cond:
        print("JSON check failed:", what, file=sys.stderr)
        sys.exit(1)
check(d["tutorwatch_bench"] == 1 and d["quick"] is True, "header")
for k in ("cpu", "cpus", "kernel", "build", "load_before", "started_utc"):
    check(k in d["machine"], "machine." + k)
s = d["stream"]
check(s["institutions"] == 12 and s["days"] == 6 and s["seed"] == 3 and s["events"] > 100, "stream")
keys = [x["key"] for x in d["stages"]]
check(keys == ["decode_msgpack", "decode_jsonl", "rules_unsynced", "engine_1", "engine_n",
               "engine_zmq"], "stage keys %s" % keys)
st = {x["key"]: x for x in d["stages"]}
check(st["decode_msgpack"]["ratio_to_decode"] == 1.0, "decode msgpack is the ratio's base")
for x in d["stages"]:
    check(x["events_per_s"] > 0 and x["seconds"] > 0 and x["cpu_seconds"] >= 0,
          "rate of " + x["key"])
    check(abs(x["ratio_to_decode"] - x["events_per_s"] / st["decode_msgpack"]["events_per_s"])
          < 1e-6, "ratio of " + x["key"])
for k in ("decode_msgpack", "decode_jsonl"):
    check(st[k]["events"] % s["events"] == 0 and st[k]["accepted"] == st[k]["events"],
          "decode passes of " + k)
engine = ["rules_unsynced", "engine_1", "engine_n", "engine_zmq"]
for k in engine:
    check(st[k]["events"] == s["events"] and st[k]["accepted"] == s["events"], "events of " + k)
alerts = {st[k]["alerts"] for k in engine}
check(len(alerts) == 1 and alerts.pop() > 0, "the same alerts from every engine stage")
check([round(x["offered_per_s"]) for x in d["latency"]] == [1500, 3000], "latency rates")
for x in d["latency"]:
    check(x["events"] > 0 and x["alerts"] > 0 and x["unmatched"] == 0, "latency counts")
    check(0 < x["p50_ms"] <= x["p99_ms"] <= x["p999_ms"] <= x["max_ms"], "ordered percentiles")
    check(sum(c for _, c in x["histogram_ns"]) == x["alerts"], "histogram counts = alerts")
    highs = [h for h, _ in x["histogram_ns"]]
    check(highs == sorted(highs), "histogram buckets in order")
check([m["institutions"] for m in d["memory"]] == [8, 16], "memory institutions")
for m in d["memory"]:
    check(m["events"] > 0 and m["rss_bytes"] > 0 and m["rss_base_bytes"] > 0, "memory rss")
    check(m["lmdb_bytes"] > 0 and m["state_bytes"] > 0 and m["dedup_bytes"] > 0, "memory lmdb")
    check(m["lmdb_bytes"] >= m["state_bytes"] + m["dedup_bytes"], "lmdb holds state and dedup")
EOF

if [ ${#plot[@]} -gt 0 ]; then
  for f in throughput.png latency.png throughput.dat latency.dat bench.gp; do
    [ -s "plots/$f" ] || fail "--plot did not write $f"
  done
  [ "$(head -c 4 plots/throughput.png | tail -c 3)" = "PNG" ] || fail "throughput.png is no PNG"
fi

# --skip: only what is asked for is run and reported.
"$TW" bench "${tiny[@]}" --skip latency,memory --json only.json >only.txt 2>only.err ||
  { cat only.err >&2; fail "bench --skip exited $?"; }
python3 -c '
import json, sys
d = json.load(open("only.json"))
sys.exit(0 if len(d["stages"]) == 6 and d["latency"] == [] and d["memory"] == [] else 1)' ||
  fail "--skip latency,memory still ran them"
if grep -q "offered/s" only.txt; then fail "--skip latency still printed a latency table"; fi

# --latency-no-sync: the latency runs' engine gets --no-sync, and the table and JSON say the
# figures are not durable; without it they say durable.
grep -q "durable commits" table.txt || fail "the latency table does not say its commits are durable"
python3 -c 'import json; d = json.load(open("out.json")); assert d["latency_no_sync"] is False' ||
  fail "the JSON report does not say latency_no_sync false"
"$TW" bench "${tiny[@]}" --skip throughput,memory --latency-no-sync --keep --work nosync \
  --json nosync.json >nosync.txt 2>nosync.err || { cat nosync.err >&2; fail "--latency-no-sync"; }
grep -q "NOT durable" nosync.txt || fail "the table does not say --no-sync figures are not durable"
python3 -c 'import json; d = json.load(open("nosync.json")); assert d["latency_no_sync"] is True' ||
  fail "the JSON report does not say latency_no_sync true"
for f in nosync/engine-latency-*.log; do
  grep -q -- "--no-sync: commits are not flushed" "$f" || fail "$f: the engine did not run --no-sync"
done

# A rule file that does not exist: exit 1 with a message, not a crash.
set +e
"$TW" bench "${tiny[@]}" --rules /nonexistent/rules.yaml >/dev/null 2>norules.err
rc=$?
set -e
expect_eq "missing rules exit status" "$rc" 1
grep -q "/nonexistent/rules.yaml" norules.err || fail "the missing rule file is not named"
# The peers' five starter rules load (bench/peers/run.sh runs them; node may be absent here).
"$TW" check --schema "$TW_SOURCE_DIR/rules/packs/schema.yaml" "$TW_SOURCE_DIR/bench/peers/five.yaml" \
  >/dev/null || fail "bench/peers/five.yaml does not load"
echo "test_bench: ok"
