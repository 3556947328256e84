#!/usr/bin/env bash
# run.sh: tutorwatch's five starter rules as batch SQL in SQLite over JSON Lines events.
#   bench/peers/sqlite/run.sh EVENTS.jsonl [DB]
# Prints one JSON line: events, load seconds (import + typed table + index), rules seconds, and
# alerts per rule. The database (default: a temporary file) is removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
events=${1:?usage: run.sh EVENTS.jsonl [DB]}
db=${2:-$(mktemp -u /tmp/tutorwatch-peer-sqlite-XXXXXX.db)}
rm -f "$db"
trap 'rm -f "$db"' EXIT
now() { date +%s.%N; }
# .import in ascii mode with a unit separator that JSON never holds unescaped: one line, one row.
t0=$(now)
sqlite3 "$db" "CREATE TABLE raw(j TEXT)" ".mode ascii" ".separator \"\\037\" \"\\n\"" \
  ".import '$events' raw" ".read '$here/load.sql'" >/dev/null
t1=$(now)
counts=$(sqlite3 -separator ' ' "$db" ".read '$here/rules.sql'" | grep ' ' || true)
t2=$(now)
n=$(sqlite3 "$db" "SELECT count(*) FROM ev")
python3 - "$n" "$t0" "$t1" "$t2" "$(sqlite3 --version | cut -d' ' -f1)" "$counts" <<'PY'
import json, sys
n, t0, t1, t2, version, counts = sys.argv[1:]
n = int(n); t0, t1, t2 = float(t0), float(t1), float(t2)
alerts = {r: 0 for r in ("prepaid_over_cap", "payment_outside_supervised_account",
                         "complaint_runaway_words", "complaint_spike",
                         "closure_with_prepaid_balance")}
for line in counts.splitlines():
    rule, c = line.split()
    alerts[rule] = int(c)
print(json.dumps({"peer": "sqlite", "version": version, "events": n,
                  "load_seconds": t1 - t0, "rules_seconds": t2 - t1, "seconds": t2 - t0,
                  "events_per_s": n / (t2 - t0), "rules_events_per_s": n / (t2 - t1),
                  "alerts": alerts}))
PY
