#!/usr/bin/env bash
# run.sh: tutorwatch and its peers side by side on the same events and the same five rules
# (over-cap payment, outside the supervised account, complaint keywords, 7-day complaint count,
# closure with balance): tutorwatch (`run`, durable LMDB state, JSON Lines input), json-rules-engine
# on Node.js (jre/run.js), and SQLite running the rules as batch SQL (sqlite/run.sh). Prints each
# one's events/s, how many times faster tutorwatch is, and the alerts per rule (they must agree).
#
#   bench/peers/run.sh [--institutions N] [--days D] [--seed S] [--json FILE]
#
# Needs: build/tutorwatch (or $TW), python3, sqlite3, node and npm (json-rules-engine is
# installed into bench/peers/jre/node_modules from package-lock.json on the first run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
TW=${TW:-$root/build/tutorwatch}
institutions=500 days=120 seed=7 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --institutions) institutions=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$TW" ] || { echo "run.sh: no tutorwatch at $TW (build it, or set TW)" >&2; exit 1; }
work=$(mktemp -d /tmp/tutorwatch-peers-XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "peers: generating $institutions institutions x $days days (seed $seed)" >&2
"$TW" gen --institutions "$institutions" --days "$days" --seed "$seed" --out "$work/events.jsonl"

# The five starter rules, in their own file (the default pack has grown past them; deriving them
# from it broke when it did).
cp "$here/five.yaml" "$work/five.yaml"
"$TW" check --schema "$root/rules/packs/schema.yaml" "$work/five.yaml" >&2

echo "peers: tutorwatch" >&2
"$TW" run --rules "$work/five.yaml" --schema "$root/rules/packs/schema.yaml" \
  --input "$work/events.jsonl" --state "$work/state" --alerts "$work/alerts.jsonl" \
  --dead-letter "$work/dead-letter.jsonl" 2>"$work/tw.log"
python3 - "$work/tw.log" "$work/alerts.jsonl" >"$work/tutorwatch.json" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
m = re.search(r"(\d+) events read.* in ([0-9.]+) s \((\d+) events/s\)", log)
if not m:
    sys.exit("cannot read the summary of tutorwatch run: " + log)
alerts = {}
for line in open(sys.argv[2]):
    r = json.loads(line)["rule"]
    alerts[r] = alerts.get(r, 0) + 1
print(json.dumps({"peer": "tutorwatch", "events": int(m.group(1)), "seconds": float(m.group(2)),
                  "events_per_s": int(m.group(1)) / float(m.group(2)), "alerts": alerts}))
PY

echo "peers: SQLite" >&2
bash "$here/sqlite/run.sh" "$work/events.jsonl" "$work/peer.db" >"$work/sqlite.json"

peers=("$work/tutorwatch.json" "$work/sqlite.json")
if command -v node >/dev/null && command -v npm >/dev/null; then
  if [ ! -d "$here/jre/node_modules/json-rules-engine" ]; then
    (cd "$here/jre" && npm ci --no-audit --no-fund >&2)
  fi
  echo "peers: json-rules-engine" >&2
  node "$here/jre/run.js" "$work/events.jsonl" >"$work/jre.json"
  peers+=("$work/jre.json")
else
  echo "peers: node or npm missing: json-rules-engine skipped" >&2
fi

python3 - "$json" "${peers[@]}" <<'PY'
import json, sys
out, files = sys.argv[1], sys.argv[2:]
res = [json.load(open(f)) for f in files]
tw = res[0]
rules = ["prepaid_over_cap", "payment_outside_supervised_account", "complaint_runaway_words",
         "complaint_spike", "closure_with_prepaid_balance"]
print("%-20s %10s %9s %12s %14s   %s" % ("", "events", "seconds", "events/s", "tutorwatch / it",
                                        "alerts per rule (" + ", ".join(rules) + ")"))
for r in res:
    ratio = "" if r is tw else "%.1fx" % (tw["events_per_s"] / r["events_per_s"])
    counts = " ".join(str(r["alerts"].get(x, 0)) for x in rules)
    print("%-20s %10d %9.2f %12.0f %14s   %s" % (r["peer"], r["events"], r["seconds"],
                                                r["events_per_s"], ratio, counts))
    if r["peer"] == "sqlite":
        print("%-20s %10s %9.2f %12.0f %14s   (rules only, after the load and the index)" % (
            "  sqlite rules only", "", r["rules_seconds"], r["rules_events_per_s"],
            "%.1fx" % (tw["events_per_s"] / r["rules_events_per_s"])))
agree = all({x: r["alerts"].get(x, 0) for x in rules} == {x: tw["alerts"].get(x, 0) for x in rules}
            for r in res)
print("alerts agree: %s" % ("yes" if agree else "NO"))
if out:
    json.dump({"results": res, "alerts_agree": agree}, open(out, "w"), indent=1)
sys.exit(0 if agree else 1)
PY
