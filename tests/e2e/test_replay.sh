#!/usr/bin/env bash
# replay (docs/replay.md): `run --record` keeps the accepted events; a replay of the record gives
# the live alerts byte for byte, the same bytes every time and whatever --shards recorded it; one
# institution's replay gives exactly that institution's live alerts; --from / --to give the live
# alerts of the range (the events before --from only warm the state); --input replays files;
# an institution-only replay names the wider-keyed rules it leaves out; the record's index skips
# what a selection does not need; a torn record tail is cut.
. "$(dirname "$0")/lib.sh"
"$TW" gen --institutions 60 --days 60 --seed 5 --out e.jsonl 2>/dev/null
"$TW" gen --institutions 60 --days 60 --seed 5 --out e.msgpack 2>/dev/null
"$TW" run --rules "$RULES" --input e.jsonl --state live --no-sync --record rec --alerts live.jsonl \
  2>run.log || { cat run.log; fail "run --record failed"; }
[ "$(wc -l < live.jsonl)" -ge 10 ] || fail "too few live alerts to compare ($(wc -l < live.jsonl))"
ls rec/stream-0/000001.seg >/dev/null || fail "no segment written"

# The whole record: the live alerts, byte for byte; twice: the same bytes.
"$TW" replay --rules "$RULES" --record rec --alerts all1.jsonl 2>rep.log || { cat rep.log; fail "replay failed"; }
cmp -s all1.jsonl live.jsonl || fail "a replay of the whole record differs from the live alerts"
"$TW" replay --rules "$RULES" --record rec --alerts - 2>/dev/null > all2.jsonl
cmp -s all1.jsonl all2.jsonl || fail "two replays of the same record differ"
grep -q "events replayed" rep.log || fail "no summary: $(cat rep.log)"

# Recorded by 2 and 3 shards (one stream each): the same replay bytes.
for n in 2 3; do
  "$TW" run --rules "$RULES" --input e.msgpack --state "live$n" --shards "$n" --no-sync \
    --record "rec$n" --alerts "live$n.jsonl" 2>/dev/null || fail "run --shards $n --record failed"
  ls "rec$n/stream-$((n - 1))" >/dev/null || fail "no stream per shard"
  "$TW" replay --rules "$RULES" --record "rec$n" --alerts "all$n.jsonl" 2>/dev/null \
    || fail "replay of the $n-shard record failed"
  cmp -s "all$n.jsonl" all1.jsonl || fail "replay of the record made with --shards $n differs"
done

# One institution: exactly its live alerts (every default rule is keyed by institution).
insts=$(grep -o '"institution_id":"[^"]*"' live.jsonl | cut -d'"' -f4 | sort -u)
[ "$(echo "$insts" | wc -l)" -ge 3 ] || fail "too few institutions with alerts"
for i in $insts; do
  "$TW" replay --rules "$RULES" --record rec --institution "$i" --alerts "i-$i.jsonl" 2>"i-$i.log" \
    || { cat "i-$i.log"; fail "replay --institution $i failed"; }
  grep "\"institution_id\":\"$i\"" live.jsonl > "l-$i.jsonl"
  cmp -s "i-$i.jsonl" "l-$i.jsonl" || fail "replay --institution $i differs from its live alerts"
  grep -q "left out" "i-$i.log" && fail "no rule should be left out with the default pack"
done
# An institution with no event at all: nothing, and nothing read but headers' indexes.
"$TW" replay --rules "$RULES" --record rec --institution 52440106MJL176301K --alerts none.jsonl \
  2>none.log || fail "replay of an absent institution failed"
[ ! -s none.jsonl ] || fail "alerts for an institution with no events"
grep -q "0 of 1 segments read, 0 records checked" none.log || fail "the index did not skip: $(cat none.log)"

# A time range: the live alerts with from <= event time < to. With `all` windows in the pack the
# warm-up reads everything before --from.
from=2025-04-01 to=2025-04-21
"$TW" replay --rules "$RULES" --record rec --from "$from" --to "$to" --alerts range.jsonl 2>/dev/null \
  || fail "replay --from --to failed"
python3 - "$from" "$to" <<'PY' > range.expected
import json, sys, datetime as d
tz = d.timezone(d.timedelta(hours=8))
lo = d.datetime.fromisoformat(sys.argv[1]).replace(tzinfo=tz)
hi = d.datetime.fromisoformat(sys.argv[2]).replace(tzinfo=tz)
for line in open("live.jsonl"):
    t = d.datetime.fromisoformat(json.loads(line)["event_time"])
    if lo <= t < hi:
        sys.stdout.write(line)
PY
[ -s range.expected ] || fail "no live alert in the range: pick another range"
cmp -s range.jsonl range.expected || fail "replay --from --to differs from the live alerts of the range"
# An institution and a range together.
i=$(echo "$insts" | head -1)
"$TW" replay --rules "$RULES" --record rec --institution "$i" --from "$from" --to "$to" --alerts ir.jsonl \
  2>/dev/null || fail "replay --institution --from --to failed"
grep "\"institution_id\":\"$i\"" range.expected > ir.expected || true
cmp -s ir.jsonl ir.expected || fail "replay --institution --from --to differs"

# Sliding windows only: the warm-up is bounded (longest window + cooldown + lateness), and the
# first day's windows are still right. complaints_7d, cooldown 1d.
cat > sliding.yaml <<'Y'
version: 1
aggregates:
  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}
  lessons_3d:    {on: [consumption], by: institution_id, fn: count(), window: 3d}
rules:
  - name: two_complaints
    on: [complaint]
    by: institution_id
    when: complaints_7d >= 2
    severity: low
    cooldown: 1d
  - name: busy
    on: [consumption]
    by: institution_id
    when: lessons_3d >= 40
    severity: info
    cooldown: 2d
Y
"$TW" run --rules sliding.yaml --input e.jsonl --state ls --no-sync --alerts ls.jsonl 2>/dev/null
"$TW" replay --rules sliding.yaml --record rec --from "$from" --to "$to" --alerts lsr.jsonl 2>lsr.log \
  || fail "sliding replay failed"
python3 - "$from" "$to" <<'PY' > lsr.expected
import json, sys, datetime as d
tz = d.timezone(d.timedelta(hours=8))
lo = d.datetime.fromisoformat(sys.argv[1]).replace(tzinfo=tz)
hi = d.datetime.fromisoformat(sys.argv[2]).replace(tzinfo=tz)
for line in open("ls.jsonl"):
    t = d.datetime.fromisoformat(json.loads(line)["event_time"])
    if lo <= t < hi:
        sys.stdout.write(line)
PY
[ "$(wc -l < lsr.expected)" -ge 3 ] || fail "too few sliding alerts in the range"
cmp -s lsr.jsonl lsr.expected || fail "sliding-window replay with warm-up differs from live"
total=$(wc -l < e.jsonl)
replayed=$(sed -nE 's/.*: ([0-9]+) events replayed.*/\1/p' lsr.log)
[ "$replayed" -lt "$total" ] || fail "the warm-up read everything ($replayed of $total) for 7d windows"

# --input: the files themselves, pseudonymised with the live state's key: the same alerts.
"$TW" replay --rules "$RULES" --input e.jsonl --pseudonym-dir live --alerts in.jsonl 2>/dev/null \
  || fail "replay --input failed"
cmp -s in.jsonl live.jsonl || fail "replay --input differs from the live alerts"

# A rule keyed by city: left out of an institution-only replay, and said so.
cat > keys.yaml <<'Y'
version: 1
aggregates:
  city_complaints_1d: {on: [complaint], by: city, fn: count(), window: 1d}
  province_payments_1d: {on: [payment], by: province, fn: count(), window: 1d}
  complaints_7d:      {on: [complaint], by: institution_id, fn: count(), window: 7d}
  warnings_14d:       {on: [alert], by: institution_id, fn: count(), window: 14d}
rules:
  - name: city_complaint_wave
    on: [complaint]
    by: city
    when: city_complaints_1d >= 2
    severity: medium
    cooldown: 1d
  - name: province_payments
    on: [payment]
    by: province
    when: province_payments_1d >= 30
    severity: info
    cooldown: 7d
  - name: complaint_pair
    on: [complaint]
    by: institution_id
    when: complaints_7d >= 2
    severity: low
    cooldown: 3d
  - name: repeated_warnings
    on: [alert]
    by: institution_id
    when: warnings_14d >= 2
    severity: high
    cooldown: 14d
Y
"$TW" run --rules keys.yaml --input e.jsonl --state k --no-sync \
  --record reck --alerts k.jsonl 2>/dev/null || fail "run with rules-keys failed"
"$TW" replay --rules keys.yaml --record reck --institution "$i" \
  --alerts ki.jsonl 2>ki.log || fail "replay with city rules failed"
# the line docs/replay.md shows
grep -qF "tutorwatch replay: an institution-only replay: 2 rules keyed by a wider key are left out (give --region with the key's prefix to include them): city_complaint_wave (by city), province_payments (by province)" ki.log \
  || fail "the rules left out are not named as docs/replay.md shows: $(cat ki.log)"
grep -q '"by":"city"' ki.jsonl && fail "a city alert in an institution-only replay"
"$TW" replay --rules keys.yaml --record reck --alerts kall.jsonl \
  2>/dev/null || fail "whole replay with city rules failed"
cmp -s kall.jsonl k.jsonl || fail "replay with city, province and composite rules differs from live"
# A region: the city rules of that city are covered when the prefix is 4 digits.
city=$(grep -o '"by":"city","key":"[0-9]*"' k.jsonl | head -1 | cut -d'"' -f8)
if [ -n "$city" ]; then
  p=${city:0:4}
  "$TW" replay --rules keys.yaml --record reck --region "$p" \
    --alerts kr.jsonl 2>kr.log || fail "replay --region failed"
  grep "\"key\":\"$city\"" k.jsonl | grep '"by":"city"' > kr.city
  grep '"by":"city"' kr.jsonl | cmp -s - kr.city || fail "city alerts of --region $p differ from live"
  grep -q "province_payments (by province)" kr.log || fail "the province rule is not named as left out"
fi

# Killed with SIGKILL mid-run and restarted: the record holds every event the state committed
# (some twice: the restart re-reads what was not committed), and its replay gives the alerts of
# the journal, which equals an uninterrupted run's.
for delay in 0.3 0.8; do
  rm -rf kill kill.rec
  "$TW" run --rules "$RULES" --input e.jsonl --state kill --batch 300 --record kill.rec \
    --alerts /dev/null 2>/dev/null &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  "$TW" run --rules "$RULES" --input e.jsonl --state kill --batch 300 --record kill.rec \
    --alerts /dev/null 2>kill.log || { cat kill.log; fail "the restart after SIGKILL failed"; }
  "$TW" journal --state kill | sed -E 's/^\{"seq":[0-9]+,/{/' > kill.journal
  cmp -s kill.journal live.jsonl || fail "the journal after SIGKILL differs from the live run"
  "$TW" replay --rules "$RULES" --record kill.rec --alerts kill.replay 2>kill.rlog \
    || { cat kill.rlog; fail "replay of a record made across a SIGKILL failed"; }
  cmp -s kill.replay live.jsonl || fail "replay of a record made across a SIGKILL (after ${delay}s) differs"
done

# Usage errors.
"$TW" replay --rules "$RULES" 2>/dev/null && fail "replay without events accepted"
"$TW" replay --rules "$RULES" --record rec --from yesterday 2>/dev/null && fail "a bad --from accepted"
"$TW" replay --rules "$RULES" --record nowhere 2>/dev/null && fail "a missing record accepted"

# A torn last record (a writer killed mid-write) is cut when the record is opened again, and a
# damaged record in the middle is found by its checksum.
# (A killed writer leaves its open segment without an index: the index is written at close.)
cp -r rec torn
ls torn/stream-0/000001.idx >/dev/null || fail "a closed record has no index"
rm torn/stream-0/000001.idx
truncate -s -7 torn/stream-0/000001.seg
"$TW" replay --rules "$RULES" --record torn --alerts /dev/null 2>/dev/null || fail "a torn tail stopped the replay"
echo '{"event_id":"x-1","type":"complaint","ts":"2025-05-01T10:00:00+08:00","institution_id":"52440106MJL176301K","region":"440106","complaint_id":"c1","category":"x","text":"ok"}' > one.jsonl
"$TW" run --rules "$RULES" --input one.jsonl --state ts --no-sync --record torn --alerts /dev/null \
  2>torn.log || { cat torn.log; fail "recording after a torn tail failed"; }
grep -q "torn last record" torn.log || fail "the torn tail was not reported: $(cat torn.log)"
cp -r rec bad
printf 'X' | dd of=bad/stream-0/000001.seg bs=1 seek=5000 conv=notrunc 2>/dev/null
"$TW" replay --rules "$RULES" --record bad --alerts /dev/null 2>bad.log && fail "a damaged record was accepted"
grep -q "checksum mismatch\|malformed record" bad.log || fail "no checksum message: $(cat bad.log)"
echo "ok"
