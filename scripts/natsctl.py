#!/usr/bin/env python3
"""natsctl.py PORT MODE [ARGS]: read a NATS JetStream server's state for tutorwatch's tests and
benchmarks (docs/scaling.md), over the plain NATS protocol and the JetStream API, so neither needs
a NATS client. Modes: ready; count STREAM; stream STREAM; left P; pending P; until STREAM N;
killwhen PID P FRACTION; covered P; owners P; delconsumers P (each described where it is
handled)."""
import base64, json, socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
args = sys.argv[3:]
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB _INBOX.t.> 1\r\n')
    return s, f
if mode == "ready":  # the server listens and JetStream answers (a cluster has a leader)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            s, f = connect()
            s.sendall(b"PUB $JS.API.INFO _INBOX.t.0 2\r\n{}\r\n")
            while True:
                line = f.readline()
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    n = int(line.split()[-1])
                    body = json.loads(f.read(n + 2)[:n] or b'{"error":1}')
                    break
                if line == b"" or line.startswith(b"-ERR"):
                    body = {"error": 1}
                    break
            s.close()
            if "error" not in body:
                sys.exit(0)
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("JetStream not ready")
s, f = connect()
def request(subject, body, attempt=0, raw=False):
    global s, f
    try:
        return request1(subject, body, raw)
    except OSError:  # a server busy electing leaders: ask again, on a new connection
        if attempt >= 3:
            raise
        s.close()
        time.sleep(1)
        s, f = connect()
        return request(subject, body, attempt + 1, raw)
counter = [0]
def request1(subject, body, raw=False):
    # Each request has its own reply subject; a late answer to an earlier one is skipped.
    counter[0] += 1
    inbox = b"_INBOX.t.%d" % counter[0]
    b = json.dumps(body).encode()
    s.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), inbox, len(b), b))
    while True:
        line = f.readline().rstrip(b"\r\n")
        if line == b"PING":
            s.sendall(b"PONG\r\n")
        elif line.startswith(b"MSG ") or line.startswith(b"HMSG "):
            parts = line.split()
            n = int(parts[-1])
            payload = f.read(n + 2)[:n]
            if parts[1] != inbox:
                continue
            if raw:  # (headers, payload)
                hlen = int(parts[-2]) if line.startswith(b"HMSG ") else 0
                return payload[:hlen].decode(errors="replace"), payload[hlen:]
            if line.startswith(b"HMSG "):
                payload = payload[int(parts[-2]):]
            return json.loads(payload) if payload else {"error": {"description": "no responders"}}
        elif line.startswith(b"-ERR") or line == b"":
            sys.exit("server: %r" % line)
def last(stream, subject):
    # A direct get (any replica answers; streams made by tutorwatch allow it): None when absent,
    # deleted or purged.
    hdrs, data = request("$JS.API.DIRECT.GET." + stream, {"last_by_subj": subject}, raw=True)
    first = hdrs.split("\r\n", 1)[0]
    if not hdrs or first.split()[1:2] not in ([], ["200"]) or "KV-Operation" in hdrs:
        return None
    return data.decode()
def consumer(k):  # partition k's consumer (named in its lease), or None when free or absent
    v = last("KV_tw-leases", "$KV.tw-leases.p.%d" % k)
    name = json.loads(v).get("consumer") if v else None
    if not name:
        return None
    try:
        ci = request("$JS.API.CONSUMER.INFO.EVENTS." + name, {})
    except OSError:  # its server is gone and the cluster has not noticed yet: not done
        return None
    return None if "error" in ci or "num_pending" not in ci else ci
if mode == "count":  # count STREAM: messages in it (0 when absent)
    r = request("$JS.API.STREAM.INFO." + args[0], {})
    print(r.get("state", {}).get("messages", 0))
elif mode == "stream":  # stream NAME: every message as {seq, subject, msg_id, data}
    st = request("$JS.API.STREAM.INFO." + args[0], {})["state"]
    for seq in range(st["first_seq"], st["last_seq"] + 1) if st["messages"] else []:
        # Only "no message" (404: deleted) skips a sequence; any other error (a cluster electing
        # a new stream leader after a node was killed) is asked again, for up to 60 s.
        deadline = time.time() + 60
        while True:
            r = request("$JS.API.STREAM.MSG.GET." + args[0], {"seq": seq})
            if "error" not in r or r["error"].get("code") == 404 or time.time() > deadline:
                break
            time.sleep(0.2)
        if "error" in r:
            continue
        m = r["message"]
        msg_id = None
        for h in base64.b64decode(m.get("hdrs", "") or "").decode().split("\r\n")[1:]:
            if h.lower().startswith("nats-msg-id:"):
                msg_id = h.split(":", 1)[1].strip()
        raw = base64.b64decode(m.get("data", ""))
        print(json.dumps({"seq": m["seq"], "subject": m["subject"], "msg_id": msg_id,
                          "data": raw.decode(errors="replace"), "b64": m.get("data", "")}))
elif mode == "delconsumers":  # delconsumers P: delete every partition's consumer (as a server
    n = 0                       # that went away takes it), printing how many were deleted
    for k in range(int(args[0])):
        v = last("KV_tw-leases", "$KV.tw-leases.p.%d" % k)
        name = json.loads(v).get("consumer") if v else None
        if name and "error" not in request("$JS.API.CONSUMER.DELETE.EVENTS." + name, {}):
            n += 1
    print(n)
elif mode == "left":  # left P: partitions whose consumer is absent or has messages to deliver
    left = 0  # or to see acknowledged
    for k in range(int(args[0])):
        ci = consumer(k)
        if ci is None or ci["num_pending"] + ci["num_ack_pending"] > 0:
            left += 1
    print(left)
elif mode == "pending":  # pending P: messages not yet delivered and acknowledged (absent: all)
    total = request("$JS.API.STREAM.INFO.EVENTS", {}).get("state", {}).get("messages", 0)
    n = 0
    for k in range(int(args[0])):
        ci = consumer(k)
        n += (total if ci is None else ci["num_pending"] + ci["num_ack_pending"])
    print(n)
elif mode == "until":  # until STREAM N: wait (polling without pause, at most 300 s) until the
    deadline = time.time() + 300  # stream holds N messages
    while time.time() < deadline:
        if request("$JS.API.STREAM.INFO." + args[0], {}).get("state", {}).get("messages", 0) >= int(args[1]):
            sys.exit(0)
    sys.exit("timed out")
elif mode == "killwhen":  # killwhen PID P FRACTION: SIGKILL PID once the messages left are at
    import os, signal  # most FRACTION of the stream (polled without pause, at most 300 s); print
    pid, parts, frac = int(args[0]), int(args[1]), float(args[2])  # how many were left
    total = request("$JS.API.STREAM.INFO.EVENTS", {}).get("state", {}).get("messages", 0)
    deadline = time.time() + 300
    while time.time() < deadline:
        n = 0
        for k in range(parts):
            ci = consumer(k)
            n += (total if ci is None else ci["num_pending"] + ci["num_ack_pending"])
        if n <= total * frac:
            break
    os.kill(pid, signal.SIGKILL)
    print(n)
elif mode == "covered":  # covered P: exit 0 when every partition's checkpoint covers the
    for k in range(int(args[0])):  # partition's last message (its Tw-Tag = that sequence)
        r = request("$JS.API.STREAM.MSG.GET.EVENTS", {"last_by_subj": "tw.events.%d" % k})
        if "error" in r:
            continue  # an empty partition
        name = base64.urlsafe_b64encode(b"partition-%d" % k).decode()
        v = last("OBJ_tw-checkpoints", "$O.tw-checkpoints.M." + name)
        if v is None or json.loads(v)["headers"]["Tw-Tag"][0] != str(r["message"]["seq"]):
            sys.exit(1)
    sys.exit(0)
elif mode == "owners":  # owners P: the engine holding each partition's lease, "-" when free
    out = []
    for k in range(int(args[0])):
        v = last("KV_tw-leases", "$KV.tw-leases.p.%d" % k)
        out.append(json.loads(v)["engine"] if v else "-")
    print(" ".join(out))
