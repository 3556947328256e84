#!/usr/bin/env bash
# Case 009: day buckets are local days (Asia/Shanghai), not UTC days. A calendar aggregate
# (bucket: 1d) counts p-1 (23:30 local) and p-3 (15:59:59.999Z) on 2025-03-01, p-4 (exactly local
# midnight, epoch ms 1740844800000) and p-2 (16:30Z) on 2025-03-02. Cut at UTC midnight, all four
# would fall on one day. Weekly buckets start on local Monday.
. "$(dirname "$0")/lib.sh"
data="$TW_SOURCE_DIR/tests/data"
cat > rules.yaml <<'YAML'
version: 1
aggregates:
  payments_today: {on: [payment], by: institution_id, fn: count(), window: 1d, bucket: 1d}
  payments_week:  {on: [payment], by: institution_id, fn: count(), window: 14d, bucket: 7d}
rules:
  - name: second_payment_today
    on: [payment]
    by: institution_id
    when: payments_today == 2
    severity: info
    message: "{payments_today} payments on this local day; {latest(payments_week)} this week"
YAML
"$TW" check rules.yaml >/dev/null || fail "the calendar rules do not pass check"
"$TW" run --rules rules.yaml --input "$data/009-time-zones.jsonl" --no-sync --alerts a.jsonl \
  2>log || { cat log; fail "run failed"; }
expect_eq "alerts (one per local day)" "$(wc -l < a.jsonl | tr -d ' ')" 2
expect_eq "second payment of 2025-03-01" "$(jq -r 'select(.event_ids[0] == "p-3") | .values.payments_today' a.jsonl)" 2
expect_eq "second payment of 2025-03-02" "$(jq -r 'select(.event_ids[0] == "p-2") | .values.payments_today' a.jsonl)" 2
# 2025-03-01 is a Saturday and 2025-03-02 a Sunday: one local week (Monday 2025-02-24 onwards).
expect_eq "week at p-2" "$(jq -r 'select(.event_ids[0] == "p-2") | .message' a.jsonl)" \
  "2 payments on this local day; 4 this week"
echo ok
