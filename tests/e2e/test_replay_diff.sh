#!/usr/bin/env bash
# replay --diff: two versions of the default pack over the same record in one pass; the known
# differences show up per rule, with counts, and the unchanged rules are reported the same.
. "$(dirname "$0")/lib.sh"
"$TW" gen --institutions 60 --days 60 --seed 5 --out e.jsonl 2>/dev/null
"$TW" run --rules "$RULES" --input e.jsonl --state s --no-sync --record rec --alerts live.jsonl 2>/dev/null
# The new version: a complaint spike from 3 complaints (was 5); an unsupervised payment is
# "high" (was "critical"); prepaid_over_cap is switched off (`when: false and ...`).
sed -e 's/^  complaint_spike_count: 5$/  complaint_spike_count: 3/' \
    -e '/name: payment_outside_supervised_account/,/severity:/ s/severity: critical/severity: high/' \
    -e 's/when: prepaid and (amount_fen/when: false and (amount_fen/' \
    "$RULES" > new.yaml
cmp -s new.yaml "$RULES" && fail "the new pack was not made"
grep -q "complaint_spike_count: 3" new.yaml && grep -q "when: false and" new.yaml || fail "sed did not apply"
cp "$TW_SOURCE_DIR/rules/packs/schema.yaml" . # beside new.yaml, as beside the default pack
"$TW" replay --rules new.yaml --record rec --alerts new_alone.jsonl 2>/dev/null || fail "new pack replay failed"
"$TW" replay --rules new.yaml --diff "$RULES" --record rec --alerts diff.jsonl 2>diff.log \
  || { cat diff.log; fail "replay --diff failed"; }
grep -q "diff of" diff.log || fail "no diff summary on stderr: $(cat diff.log)"
python3 - <<'PY' || fail "the diff is not what the changes imply"
import json, collections
live = [json.loads(l) for l in open("live.jsonl")]          # the old pack, live
new = [json.loads(l) for l in open("new_alone.jsonl")]      # the new pack, replayed alone
lines = [json.loads(l) for l in open("diff.jsonl")]
summ = {l["summary"]: l for l in lines if "summary" in l}
entries = [l for l in lines if "diff" in l]
old_n = collections.Counter(a["rule"] for a in live)
new_n = collections.Counter(a["rule"] for a in new)
def check(c, msg):
    if not c:
        raise SystemExit("FAIL: " + msg)
for rule in set(old_n) | set(new_n):
    s = summ.get(rule)
    check(s is not None, "no summary for " + rule)
    check(s["old"] == old_n[rule] and s["new"] == new_n[rule], "counts of %s: %s" % (rule, s))
    check(s["same"] + s["changed"] + s["only_old"] == s["old"], "old side of %s: %s" % (rule, s))
    check(s["same"] + s["changed"] + s["only_new"] == s["new"], "new side of %s: %s" % (rule, s))
    n_entries = sum(1 for e in entries if e["rule"] == rule)
    check(n_entries == s["changed"] + s["only_old"] + s["only_new"], "entries of " + rule)
pos = "payment_outside_supervised_account"
check(old_n[pos] > 0 and summ[pos]["changed"] == old_n[pos] and summ[pos]["same"] == 0,
      "every unsupervised payment alert changed severity: %s" % summ[pos])
for e in entries:
    if e["rule"] == pos:
        check(e["diff"] == "changed" and e["changed"] == ["severity"], "severity only: %s" % e)
        check(e["old"]["severity"] == "critical" and e["new"]["severity"] == "high", "severities")
cs = "complaint_spike"
check(summ[cs]["only_new"] + summ[cs]["changed"] > 0, "a lower spike threshold changed nothing")
poc = "prepaid_over_cap"
check(old_n[poc] > 0 and new_n[poc] == 0 and summ[poc]["only_old"] == old_n[poc]
      and summ[poc]["only_new"] == summ[poc]["same"] == summ[poc]["changed"] == 0,
      "a rule switched off: every old alert only in the old: %s" % summ[poc])
for rule in ("complaint_runaway_words", "closure_with_prepaid_balance", "classes_stopped"):
    if rule in summ:
        s = summ[rule]
        check(s["same"] == s["old"] == s["new"] and s["changed"] == s["only_old"] == s["only_new"] == 0,
              "unchanged rule %s differs: %s" % (rule, s))
PY
# The same rules on both sides: nothing differs.
"$TW" replay --rules "$RULES" --diff "$RULES" --record rec --alerts same.jsonl 2>/dev/null || fail "self-diff failed"
grep -q '"diff"' same.jsonl && fail "a pack differs from itself"
[ "$(grep -c '"summary"' same.jsonl)" -ge 3 ] || fail "no per-rule summary in a self-diff"
# One pass: the events are read once for both rule files.
"$TW" replay --rules "$RULES" --record rec --alerts /dev/null 2>one.log
n1=$(sed -nE 's/.*: ([0-9]+) events replayed.*/\1/p' one.log)
n2=$(sed -nE 's/.*: ([0-9]+) events replayed.*/\1/p' diff.log)
expect_eq "events read by a diff" "$n2" "$n1"
echo ok
