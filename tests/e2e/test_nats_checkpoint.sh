#!/usr/bin/env bash
# Checkpoint restore on NATS JetStream (docs/scaling.md), on one server: engine a processes the
# first part of a stream and checkpoints its partitions to the object store tw-checkpoints; it is
# killed with -9 and its state directory is lost with its machine. Engine b, on an empty state
# directory, restores each partition from its checkpoint, resumes right after the stream sequence
# the checkpoint covers (reading only what came after), and ALERTS ends up holding exactly the
# alerts of a batch run over the whole stream, each once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats_lib.sh"
P=6
nats_single

two_part_stream

start_engine a --lease 2s --checkpoint-every 1s
wait_for 60 "engine a to take every partition" owned_by a $P
"$TW" send --nats "$NATS_URL" --partitions $P part1.jsonl 2>/dev/null
wait_for 60 "the first part processed" all_done
# Every partition's checkpoint covers the first part: its tag is the partition's last sequence.
wait_for 60 "a checkpoint of every partition covering its last event" \
  python3 nats.py "$NATS_PORT" covered $P
kill -9 "${ENGINE[a]}"
unset "ENGINE[a]"
before=$(python3 nats.py "$NATS_PORT" count ALERTS)
rm -rf st-a # the machine is lost with its disk

# The checkpoints are objects in the NATS object-store layout: metadata with size, chunk count
# and SHA-256 digest; the chunks hash to that digest.
python3 nats.py "$NATS_PORT" stream OBJ_tw-checkpoints >objects.jsonl
python3 - <<'PY' || fail "a checkpoint object does not match its metadata"
import base64, hashlib, json
msgs = [json.loads(l) for l in open("objects.jsonl")]
metas = {}
for m in msgs:  # the newest metadata message of each name
    if m["subject"].startswith("$O.tw-checkpoints.M."):
        meta = json.loads(m["data"])
        metas[meta["name"]] = meta
assert len(metas) == 6, sorted(metas)
for name, meta in metas.items():
    chunks = [base64.b64decode(m["b64"]) for m in msgs
              if m["subject"] == "$O.tw-checkpoints.C." + meta["nuid"]]
    body = b"".join(chunks)
    assert len(chunks) == meta["chunks"], (name, len(chunks), meta["chunks"])
    assert len(body) == meta["size"], (name, len(body), meta["size"])
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    assert digest == meta["digest"], (name, digest, meta["digest"])
    assert body[16:20] == b"\xde\xc0\xef\xbe", name  # an LMDB file: its meta page magic
PY

"$TW" send --nats "$NATS_URL" --partitions $P part2.jsonl 2>/dev/null
start_engine b --lease 2s --checkpoint-every 1s
wait_for 60 "engine b to take every partition" owned_by b $P
# A lease is visible before its partition's restore is logged: wait for the log lines.
restored() { [ "$(grep -c "from the checkpoint" b.log)" -ge "$P" ]; }
wait_for 60 "engine b to restore every partition" restored
expect_eq "partitions restored from a checkpoint" "$(grep -c "from the checkpoint" b.log)" $P
grep "resuming after stream sequence" b.log
if grep "taken" b.log | grep -q "resuming after stream sequence 0 "; then
  fail "b started a partition from the beginning"
fi
wait_for 60 "everything processed" all_done
wait_for 60 "the alerts" alerts_at_least "$(wc -l <want.jsonl)"
sleep 3 # the idle partitions run their sweeps up to the newest event time
stop_engine b
# b read only what its checkpoints did not cover: the second part, and nothing of the first.
read_b=$(sed -n 's/^tutorwatch run: \([0-9]*\) events in.*/\1/p' b.log)
expect_eq "events b read" "$read_b" "$(wc -l <part2.jsonl)"
check_alerts want.jsonl
echo "checkpoint restore: b resumed $P partitions from a's checkpoints, read $read_b events; ALERTS holds the batch run's $(wc -l <want.jsonl) alerts ($before before a was killed), each once"
