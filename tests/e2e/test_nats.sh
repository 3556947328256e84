#!/usr/bin/env bash
# NATS JetStream, first slice (docs/scaling.md): one nats-server with JetStream on a free loopback
# port; `send --nats` publishes a generated stream to EVENTS over 4 partitions; `run --nats`
# consumes it, is killed (-9) mid-stream and restarted on the same state; at the end the ALERTS
# stream holds exactly the alerts of a batch `run --input` over the same events: the same alerts
# byte for byte, each once, each with Nats-Msg-Id = alert_id on tw.alerts.<region>.<severity>.
. "$(dirname "$0")/lib.sh"
command -v nats-server >/dev/null || fail "nats-server is not installed (scripts/debian-packages.txt)"
P=4

# dump.py PORT stream STREAM: every message as {seq, subject, msg_id, data};
# dump.py PORT pending N: messages the consumers tw-p0..N-1 have not had acknowledged yet;
# dump.py PORT killat PID N: kill -9 PID once ALERTS holds an alert, then as pending N.
# Plain NATS protocol over the JetStream API, so the test needs no NATS client.
cat > dump.py <<'PY'
import base64, json, socket, sys
port, mode, arg = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")
f.readline()
s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB _INBOX.t 1\r\n')
def request(subject, body):
    b = json.dumps(body).encode()
    s.sendall(b"PUB %s _INBOX.t %d\r\n%s\r\n" % (subject.encode(), len(b), b))
    while True:
        line = f.readline().rstrip(b"\r\n")
        if line == b"PING":
            s.sendall(b"PONG\r\n")
        elif line.startswith(b"MSG ") or line.startswith(b"HMSG "):
            parts = line.split()
            n = int(parts[-1])
            payload = f.read(n + 2)[:n]
            if line.startswith(b"HMSG "):
                payload = payload[int(parts[-2]):]
            return json.loads(payload) if payload else {"error": "no responders"}
        elif line.startswith(b"-ERR") or line == b"":
            sys.exit("server: %r" % line)
if mode == "killat":  # killat PID: SIGKILL PID as soon as ALERTS holds a message (polled every
    import os, signal, time  # 5 ms, bounded by 60 s), then print the messages left unacknowledged
    pid, deadline = int(arg), time.time() + 60
    while time.time() < deadline:
        st = request("$JS.API.STREAM.INFO.ALERTS", {})
        if "state" in st and st["state"]["messages"] > 0:
            break
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    mode, arg = "pending", sys.argv[4]
if mode == "pending":
    left = 0
    for k in range(int(arg)):
        ci = request("$JS.API.CONSUMER.INFO.EVENTS.tw-p%d" % k, {})
        if "error" in ci:
            left += 1  # not created yet
        else:
            left += ci["num_pending"] + ci["num_ack_pending"]
    print(left)
    sys.exit(0)
st = request("$JS.API.STREAM.INFO." + arg, {})["state"]
for seq in range(st["first_seq"], st["last_seq"] + 1) if st["messages"] else []:
    r = request("$JS.API.STREAM.MSG.GET." + arg, {"seq": seq})
    if "error" in r:
        continue
    m = r["message"]
    msg_id = None
    for h in base64.b64decode(m.get("hdrs", "")).decode().split("\r\n")[1:]:
        if h.lower().startswith("nats-msg-id:"):
            msg_id = h.split(":", 1)[1].strip()
    print(json.dumps({"seq": m["seq"], "subject": m["subject"], "msg_id": msg_id,
                      "data": base64.b64decode(m.get("data", "")).decode()}))
PY

port=$(free_port)
URL="nats://127.0.0.1:$port"

# Usage errors exit 2; no server exits 1 with the reason (nothing listens on $port yet).
status() { "$@" 2>/dev/null && echo 0 || echo $?; }
expect_eq "--nats without --partitions" "$(status "$TW" send --nats "$URL" /dev/null)" 2
expect_eq "--nats with --connect" \
  "$(status "$TW" send --nats "$URL" --partitions 2 --connect tcp://127.0.0.1:1 /dev/null)" 2
expect_eq "--owns twice" "$(status "$TW" run --rules "$RULES" --nats "$URL" --partitions 4 \
  --owns 1,1 --state s)" 2
expect_eq "--owns out of range" "$(status "$TW" run --rules "$RULES" --nats "$URL" --partitions 4 \
  --owns 4 --state s)" 2
expect_eq "--nats with --input" "$(status "$TW" run --rules "$RULES" --nats "$URL" --partitions 4 \
  --input /dev/null --state s)" 2
expect_eq "--nats without --state" \
  "$(status "$TW" run --rules "$RULES" --nats "$URL" --partitions 4)" 2
"$TW" send --nats "$URL" --partitions 4 /dev/null 2>noserver.log && fail "send without a server"
grep -q "No server available" noserver.log || { cat noserver.log; fail "no reason given"; }

nats-server -js -a 127.0.0.1 -p "$port" -sd "$TW_WORK/js" >server.log 2>&1 &
server=$!
engine=
trap 'kill -9 $server $engine 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "Server is ready" server.log && break
  kill -0 $server 2>/dev/null || { cat server.log; fail "nats-server did not start"; }
  sleep 0.1
done
grep -q "Server is ready" server.log || { cat server.log; fail "nats-server not ready"; }

# Seed 3: 14 alerts, the first near the middle of the stream, so the kill below (after the first)
# leaves about half the stream and most alerts to the restarted engine.
"$TW" gen --institutions 100 --days 20 --seed 3 --out e.jsonl 2>/dev/null
total=$(wc -l <e.jsonl)
"$TW" run --rules "$RULES" --input e.jsonl --state ref --no-sync --alerts want.jsonl 2>/dev/null
[ -s want.jsonl ] || fail "the reference run raised no alert"

"$TW" send --nats "$URL" --partitions $P e.jsonl 2>send.log || { cat send.log; fail "send --nats"; }
grep -q "sent $total events" send.log || { cat send.log; fail "not every event was sent"; }
# A second send is dropped by the stream: Nats-Msg-Id = event_id.
"$TW" send --nats "$URL" --partitions $P e.jsonl 2>send2.log || { cat send2.log; fail "send again"; }
grep -q "$total already in the stream" send2.log || { cat send2.log; fail "events stored twice"; }
# Each event went to the partition of its institution: FNV-1a 64 of the code mod P, computed here
# from the specification (so an outside producer agrees), as the engine's shards.
python3 dump.py "$port" stream EVENTS >events.jsonl
expect_eq "events in the stream" "$(wc -l <events.jsonl)" "$total"
jq -r '[.subject, .msg_id, (.data | fromjson | .event_id, .institution_id)] | @tsv' events.jsonl |
  python3 -c '
import sys
for line in sys.stdin:
    subject, msg_id, event_id, inst = line.rstrip("\n").split("\t")
    h = 14695981039346656037
    for b in inst.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    assert subject == "tw.events.%d" % (h % '$P'), (subject, inst)
    assert msg_id == event_id, (msg_id, event_id)
' || fail "an event is on the wrong partition or without its Nats-Msg-Id"

run_engine() { # LOG: the engine in the background, pid in $engine, started when it listens
  "$TW" run --rules "$RULES" --nats "$URL" --partitions $P --state live --no-sync --batch 50 \
    --dead-letter dl.jsonl 2>"$1" &
  engine=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$1" && return 0
    kill -0 $engine 2>/dev/null || break
    sleep 0.1
  done
  cat "$1"
  fail "engine did not start"
}

run_engine engine1.log
# Killed as soon as the first alert is in ALERTS: committed, published, and about half the stream
# left (polled from one process, every 5 ms: the engine is fast).
left=$(python3 dump.py "$port" killat $engine $P)
wait $engine 2>/dev/null || true
[ "$left" -gt $((total / 5)) ] || { cat engine1.log; fail "only $left of $total events were left at the kill; the test proves little"; }
before=$(python3 dump.py "$port" stream ALERTS | wc -l)
[ "$before" -gt 0 ] || { cat engine1.log; fail "no alert was published before the kill"; }
echo "killed with $left events unacknowledged and $before alerts published"

run_engine engine2.log
for _ in $(seq 1 600); do # bounded: until every message is acknowledged
  [ "$(python3 dump.py "$port" pending $P)" = 0 ] && break
  sleep 0.1
done
expect_eq "unacknowledged after the restart" "$(python3 dump.py "$port" pending $P)" 0
sleep 1.5 # the idle flush processes what waited for the watermark
kill -TERM $engine
wait $engine || { cat engine2.log; fail "engine did not exit 0 on SIGTERM"; }
engine=
cat engine2.log
read2=$(sed -n 's/.*run: \([0-9][0-9]*\) events read.*/\1/p' engine2.log)
[ "${read2:-0}" -gt $((total / 4)) ] || fail "the restarted engine read only ${read2:-0} events"

python3 dump.py "$port" stream ALERTS >alerts.jsonl
jq -r '.data' alerts.jsonl | sort >got.sorted
sort want.jsonl >want.sorted
diff -u want.sorted got.sorted || fail "the ALERTS stream differs from the batch run"
expect_eq "each alert once" "$(jq -r '.data | fromjson | .alert_id' alerts.jsonl | sort -u | wc -l)" \
  "$(wc -l <want.jsonl)"
bad=$(jq -r 'select(.msg_id != (.data | fromjson | .alert_id) or
          .subject != ("tw.alerts." + (.data | fromjson | .region + "." + .severity))) | .seq' alerts.jsonl)
[ -z "$bad" ] || fail "alerts without Nats-Msg-Id = alert_id or on the wrong subject: $bad"
[ ! -s dl.jsonl ] || { head -3 dl.jsonl; fail "events were dead-lettered"; }
after=$(wc -l <alerts.jsonl)
[ "$after" -gt "$before" ] || fail "no alert was published after the restart; the test proves little"
echo "killed and restarted on NATS: ALERTS holds the batch run's $after alerts ($before before the kill), each once"
