#!/usr/bin/env bash
# Event time (docs/engine.md): results do not depend on arrival order within the allowed
# lateness (case 001); a wrong clock far ahead is refused as future_skew and does not poison the
# watermark (case 003); window bounds are (t - W, t] (case 004); events behind the watermark are
# processed while state still holds their window, and dead-lettered as too_late beyond it.
. "$(dirname "$0")/lib.sh"
data="$TW_SOURCE_DIR/tests/data"
cat > rules.yaml <<'YAML'
version: 1
aggregates:
  payments_1h: {on: [payment], by: institution_id, fn: count(), window: 1h}
  collected_1h: {on: [payment], by: institution_id, fn: sum(amount_fen), window: 1h}
  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}
rules:
  - name: payment_burst
    on: [payment]
    by: institution_id
    when: payments_1h >= 3
    severity: medium
    message: "{payments_1h} payments, {collected_1h} fen in the last hour"
  - name: complaint_seen
    on: [complaint]
    by: institution_id
    when: complaints_7d >= 1
    severity: info
    message: "{complaints_7d} complaints in 7 days"
YAML
cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" schema.yaml

# 001: sorted and shuffled (displaced by at most 9 minutes) give the same alerts, byte for byte.
"$TW" run --rules rules.yaml --input "$data/001-out-of-order.sorted.jsonl" --state s1 \
  --alerts sorted.jsonl --dead-letter dl1.jsonl 2>log1.txt
"$TW" run --rules rules.yaml --input "$data/001-out-of-order.shuffled.jsonl" --state s2 \
  --alerts shuffled.jsonl --dead-letter dl2.jsonl 2>log2.txt
[ -s sorted.jsonl ] || fail "case 001 raised no alert: the test would prove nothing"
cmp sorted.jsonl shuffled.jsonl || { diff sorted.jsonl shuffled.jsonl | head; fail "case 001: arrival order changed the alerts"; }
grep -q "40 accepted, 0 rejected" log2.txt || { cat log2.txt; fail "case 001: events lost"; }
# Same with a batch of 1 (a commit after every record) and with allowed lateness 0 the shuffled
# file is processed in arrival order and differs: the reorder buffer is what makes it right.
"$TW" run --rules rules.yaml --input "$data/001-out-of-order.shuffled.jsonl" --state s3 \
  --batch 1 --alerts shuffled-b1.jsonl 2>/dev/null
cmp sorted.jsonl shuffled-b1.jsonl || fail "case 001: batch size changed the alerts"
"$TW" run --rules rules.yaml --input "$data/001-out-of-order.shuffled.jsonl" --state s4 \
  --allowed-lateness 0s --alerts shuffled-l0.jsonl 2>l0.txt
cmp -s sorted.jsonl shuffled-l0.jsonl && fail "case 001 without lateness should differ (test is blind)"
grep -q "late (behind the watermark" l0.txt || { cat l0.txt; fail "late events not counted"; }

# 003: p-99 (2099) goes to the dead-letter as future_skew; the 10 others are processed; none is
# too_late.
"$TW" run --rules rules.yaml --input "$data/003-future-timestamp.jsonl" --state s5 \
  --alerts a3.jsonl --dead-letter dl3.jsonl 2>log3.txt
expect_eq "case 003 dead-letter lines" "$(wc -l < dl3.jsonl)" 1
jq -e 'select(.reason == "future_skew" and (.raw | contains("\"p-99\"")))' dl3.jsonl >/dev/null \
  || { cat dl3.jsonl; fail "case 003: p-99 not refused as future_skew"; }
grep -q "11 events read, 10 accepted, 1 rejected" log3.txt || { cat log3.txt; fail "case 003 counts"; }
grep -q "too_late" dl3.jsonl && fail "case 003: an event was refused as too_late"

# A wrong clock on the very first event must not make the rest of the stream late.
{ sed -n 1p "$data/003-future-timestamp.jsonl" | sed 's/"p-0"/"p-first"/; s/2025-03-01T10:00:00/2030-01-01T00:00:00/'
  cat "$data/003-future-timestamp.jsonl"; } > first.jsonl
"$TW" run --rules rules.yaml --input first.jsonl --state s9 --alerts a9.jsonl --dead-letter dl9.jsonl 2>log9.txt
grep -q "12 events read, 10 accepted, 2 rejected" log9.txt || { cat log9.txt; cat dl9.jsonl; fail "a far-future first event poisoned the stream"; }
expect_eq "future_skew lines" "$(grep -c '"reason":"future_skew"' dl9.jsonl)" 2

# 004: at c-3 (2025-03-08T10:00:00+08:00) the 7-day window (t-7d, t] holds c-2 and c-3: 2.
"$TW" run --rules rules.yaml --input "$data/004-window-edge.jsonl" --state s6 --alerts a4.jsonl 2>/dev/null
expect_eq "case 004 count at c-3" \
  "$(jq -r 'select(.event_ids[0] == "c-3") | .values.complaints_7d' a4.jsonl)" 2

# Late and too late: after events up to 2025-03-20, one from 03-19 (a day behind: late, inside
# the 7-day window) is processed; one from 03-01 (beyond watermark - 7d) is refused as too_late.
inst=52440106MJL17630G2
c() { echo '{"event_id":"'$1'","type":"complaint","ts":"'$2'","institution_id":"'$inst'","region":"440106","complaint_id":"'$1'","category":"service","text":"x"}'; }
{ c k1 2025-03-18T10:00:00+08:00; c k2 2025-03-20T10:00:00+08:00; c k3 2025-03-20T12:00:00+08:00
  c late 2025-03-19T10:00:00+08:00; c old 2025-03-01T10:00:00+08:00; } > late.jsonl
"$TW" run --rules rules.yaml --input late.jsonl --state s7 --alerts a5.jsonl --dead-letter dl5.jsonl 2>log5.txt
grep -q "5 events read, 4 accepted, 1 rejected" log5.txt || { cat log5.txt; fail "late/too_late counts"; }
grep -q "1 late" log5.txt || { cat log5.txt; fail "the late event was not counted as late"; }
jq -e 'select(.reason == "too_late" and (.raw | contains("\"old\"")))' dl5.jsonl >/dev/null \
  || { cat dl5.jsonl; fail "the old event was not refused as too_late"; }
expect_eq "count seen by the late event" \
  "$(jq -r 'select(.event_ids[0] == "late") | .values.complaints_7d' a5.jsonl)" 2
# 002: a redelivered event (same event_id) is counted once and reported as a duplicate, not
# dead-lettered: 3 payments, 900,000 fen.
cat > dup-rules.yaml <<'YAML'
version: 1
aggregates:
  paid_all: {on: [payment], by: institution_id, fn: sum(amount_fen), window: all}
  payments_all: {on: [payment], by: institution_id, fn: count(), window: all}
rules:
  - name: every_payment
    on: [payment]
    by: institution_id
    when: payments_all >= 1 and paid_all > 0yuan
    severity: info
YAML
"$TW" run --rules dup-rules.yaml --input "$data/002-duplicate-delivery.jsonl" --state s8 \
  --alerts a6.jsonl --dead-letter dl6.jsonl 2>log6.txt
grep -q "5 events read, 3 accepted, 0 rejected" log6.txt || { cat log6.txt; fail "case 002 counts"; }
grep -q "2 duplicates" log6.txt || { cat log6.txt; fail "case 002: duplicates not reported"; }
[ ! -s dl6.jsonl ] || fail "case 002: duplicates were dead-lettered"
expect_eq "case 002 total" "$(jq -s 'map(.values.paid_all // empty) | max' a6.jsonl)" 900000
expect_eq "case 002 count" "$(jq -s 'map(.values.payments_all) | max' a6.jsonl)" 3

# Restarts after kills inside group commits, on shuffled input with events held for the
# watermark: the resume re-reads records that were held (and some already processed after
# them); dedup makes the final journal equal to an uninterrupted run, at every kill point.
if command -v strace >/dev/null; then
  args=(--rules "$PWD/rules.yaml" --input "$data/001-out-of-order.shuffled.jsonl" --batch 3
        --allowed-lateness 4m --alerts a.jsonl --dead-letter dl.jsonl)
  mkdir ref && (cd ref && "$TW" run "${args[@]}" --state st 2>/dev/null)
  "$TW" journal --state ref/st > ref.journal
  [ -s ref.journal ] || fail "reference journal empty"
  for k in 2 3 4 5 6 7 8 9 10; do
    mkdir "k$k"
    (cd "k$k" && strace -f -qq -o /dev/null -e trace=fdatasync,fsync \
      -e inject=fdatasync:signal=KILL:when=$k -e inject=fsync:signal=KILL:when=$k \
      "$TW" run "${args[@]}" --state st 2>/dev/null) && continue # finished before the k-th sync
    (cd "k$k" && "$TW" run "${args[@]}" --state st 2>restart.log) \
      || { cat "k$k/restart.log"; fail "restart after a kill at sync $k failed"; }
    "$TW" journal --state "k$k/st" | cmp -s - ref.journal \
      || fail "kill at sync $k: journal differs from the uninterrupted run"
  done
fi
echo "event time: order-independent, future skew refused, window edges exact, lateness handled"
