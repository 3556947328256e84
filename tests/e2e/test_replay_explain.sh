#!/usr/bin/env bash
# replay --explain / --explain-all / --evidence: a windowed sum (the condition with every
# sub-expression's value, the window's bounds and value, the contributing events, checked
# against the input itself) and a scheduled rule; an evidence pack whose SHA-256 sums check.
. "$(dirname "$0")/lib.sh"
"$TW" gen --institutions 60 --days 60 --seed 5 --out e.jsonl 2>/dev/null
cat > sums.yaml <<'Y'
version: 1
aggregates:
  paid_3d: {on: [payment], by: institution_id, fn: sum(amount_fen), window: 3d}
rules:
  - name: much_prepaid_in_3_days
    source: "test rule: a windowed sum"
    on: [payment]
    by: institution_id
    when: paid_3d > 15000yuan and amount_fen > 0yuan
    severity: medium
    cooldown: 3d
    message: "{paid_3d} fen in 3 days"
Y
cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" .
"$TW" run --rules sums.yaml --input e.jsonl --state s1 --no-sync --record rec --alerts sums_live.jsonl 2>/dev/null
[ "$(wc -l < sums_live.jsonl)" -ge 2 ] || fail "too few windowed-sum alerts to explain"
"$TW" replay --rules sums.yaml --record rec --explain-all --alerts sums_ex.jsonl --evidence ev.json \
  2>ex.log || { cat ex.log; fail "replay --explain-all failed"; }
expect_eq "one explanation per alert" "$(wc -l < sums_ex.jsonl)" "$(wc -l < sums_live.jsonl)"
python3 - <<'PY' || fail "windowed-sum explanation is wrong"
import json, datetime as d
def T(s): return d.datetime.fromisoformat(s)
events = [json.loads(l) for l in open("e.jsonl")]
live = [json.loads(l) for l in open("sums_live.jsonl")]
exs = [json.loads(l) for l in open("sums_ex.jsonl")]
def check(c, msg):
    if not c: raise SystemExit("FAIL: " + msg)
for a, x in zip(live, exs):
    check(a["alert_id"] == x["alert_id"], "explanations in alert order")
    check(x["rule"] == "much_prepaid_in_3_days" and x["source"] == "test rule: a windowed sum", "rule and source")
    check(len(x["rules_sha256"]) == 64, "the rule file's hash")
    c = x["condition"]
    check(c["value"] is True, "the condition held")
    subs = {s["text"]: s for s in c["subexpressions"]}
    check(c["text"] == "(paid_3d > 15000yuan) and (amount_fen > 0yuan)", "condition text: " + c["text"])
    check(c["source"] == "paid_3d > 15000yuan and amount_fen > 0yuan", "condition as written: " + c["source"])
    for sub in c["subexpressions"]:  # each position points into the text as written
        src = c["source"].encode()
        if sub["text"] in ("paid_3d", "amount_fen"):
            check(src[sub["pos"]:].startswith(sub["text"].encode()), "pos of " + sub["text"])
        if sub["depth"] == 0:
            check(src[sub["pos"]:].startswith(b"and"), "pos of the root: its operator")
    check(subs["paid_3d > 15000yuan"]["value"] is True and subs["amount_fen > 0yuan"]["value"] is True, "sub-expressions")
    check(subs["paid_3d"]["value"] == a["values"]["paid_3d"], "the aggregate as in the alert")
    check(subs["amount_fen"]["value"] == a["values"]["amount_fen"], "the field as in the alert")
    agg = x["aggregates"][0]
    check(agg["name"] == "paid_3d" and agg["fn"] == "sum" and agg["window"] == "3d", "aggregate definition")
    t = T(x["event_time"])
    check(T(agg["window_until"]) == t and T(agg["window_after"]) == t - d.timedelta(days=3), "window bounds")
    mine = [e for e in events if e["type"] == "payment" and e["institution_id"] == x["key"]
            and t - d.timedelta(days=3) < T(e["ts"]) <= t]
    ids = sorted(e["event_id"] for e in mine)
    listed = sorted(e["event_id"] for e in agg["events"])
    if len(mine) <= 32:
        check(listed == ids, "contributing events %s, the input says %s" % (listed, ids))
        check("events_note" not in agg, "a note with every event listed")
    else:
        check(len(listed) == 32 and "events_note" in agg, "bounded list with a note")
    exact = sum(e["amount_fen"] for e in mine)
    # the value may include events up to one bucket (1h for 3d) older than the window's start
    slop = sum(e["amount_fen"] for e in events if e["type"] == "payment" and e["institution_id"] == x["key"]
               and t - d.timedelta(days=3, hours=1) < T(e["ts"]) <= t)
    check(exact <= agg["value"] <= slop, "window value %d vs input %d..%d" % (agg["value"], exact, slop))
    check(x["trigger"]["event_id"] == a["event_ids"][0] and x["trigger"]["type"] == "payment", "trigger")
PY
# The evidence pack: self-contained, each part's SHA-256 as documented.
python3 - <<'PY' || fail "evidence pack hashes do not check"
import json, hashlib
p = json.load(open("ev.json"))
def h(b): return hashlib.sha256(b).hexdigest()
def canon(o): return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
assert p["format"] == "tutorwatch-evidence/1"
assert p["rules"]["sha256"] == h(p["rules"]["text"].encode()) == h(open("sums.yaml", "rb").read())
assert p["inputs"]["record"] == "rec"
assert len(p["alerts"]) >= 2
for a in p["alerts"]:
    assert a["sha256"]["alert"] == h(a["alert"].encode()), "alert"
    assert a["sha256"]["explanation"] == h(canon(a["explanation"])), "explanation"
    assert a["sha256"]["events"] == h(canon(a["events"])), "events"
    assert json.loads(a["alert"])["alert_id"] == a["explanation"]["alert_id"]
    assert a["explanation"]["rules_sha256"] == p["rules"]["sha256"]
PY
cmp -s <(python3 -c 'import json;[print(json.loads(l)["alert_id"]) for l in open("sums_ex.jsonl")]') \
       <(python3 -c 'import json;[print(json.loads(a["alert"])["alert_id"]) for a in json.load(open("ev.json"))["alerts"]]') \
  || fail "the pack and the explanations name different alerts"

# A scheduled rule (classes_stopped, every 1d) of the default pack, asked for by id.
"$TW" run --rules "$RULES" --input e.jsonl --state s2 --no-sync --record rec2 --alerts live.jsonl 2>/dev/null
id=$(grep '"rule":"classes_stopped"' live.jsonl | head -1 | cut -d'"' -f4)
[ -n "$id" ] || fail "no classes_stopped alert to explain"
"$TW" replay --rules "$RULES" --record rec2 --explain "$id" --alerts cs.jsonl 2>cs.log \
  || { cat cs.log; fail "replay --explain $id failed"; }
expect_eq "one explanation" "$(wc -l < cs.jsonl)" 1
python3 - "$id" <<'PY' || fail "scheduled-rule explanation is wrong"
import json, sys, datetime as d
x = json.loads(open("cs.jsonl").read())
assert x["alert_id"] == sys.argv[1]
assert x["trigger"]["kind"] == "scheduled sweep" and x["trigger"]["every"] == "1d", x["trigger"]
assert x["trigger"]["event_id"].startswith("every:classes_stopped:")
t = d.datetime.fromisoformat(x["event_time"])
assert (t.hour, t.minute) == (0, 0), "sweeps run at local midnight"
aggs = {a["name"]: a for a in x["aggregates"]}
assert aggs["lessons_7d"]["value"] == 0 and aggs["lessons_7d"]["window"] == "7d"
assert aggs["lessons_7d"]["events"] == [], "no lesson in the window"
assert d.datetime.fromisoformat(aggs["lessons_7d"]["window_after"]) == t - d.timedelta(days=7)
assert aggs["lessons_all"]["window"] == "all" and aggs["lessons_all"]["value"] > 0
assert aggs["lessons_all"]["window_after"] is None
assert aggs["collected_all"]["value"] - aggs["consumed_all"]["value"] - aggs["refunded_all"]["value"] > 0
subs = {s["text"]: s for s in x["condition"]["subexpressions"]}
assert subs["lessons_7d == 0"]["value"] is True and subs["lessons_all > 0"]["value"] is True
assert x["condition"]["value"] is True
assert x["cooldown"] == "7d" and x["source"].startswith("heuristic")
PY
# An id that did not fire: said, and exit 1; --evidence alone is a usage error.
"$TW" replay --rules "$RULES" --record rec2 --explain 00000000000000000000000000000000 --alerts /dev/null \
  2>miss.log && fail "an alert that did not fire was explained"
grep -q "was not raised" miss.log || fail "no message for a missing alert: $(cat miss.log)"
"$TW" replay --rules "$RULES" --record rec2 --evidence x.json 2>/dev/null && fail "--evidence without --explain accepted"
echo ok
