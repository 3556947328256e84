/*
 * cmd_run.c: `tutorwatch run`: evaluate rules over events and publish alerts.
 *
 * With --input it reads a file (or stdin) to its end, commits, prints a one-line summary and
 * exits. With --listen it binds a ZeroMQ PULL endpoint and serves on a libuv loop until SIGINT or
 * SIGTERM: the socket's ZMQ_FD wakes a uv_poll handle (drained until empty, since ZMQ_FD is
 * edge-triggered). A drain that empties the socket group-commits what it took (commit when the
 * input goes idle), so an alert leaves as soon as its batch is durable; a 100 ms timer also drains
 * and commits, and sweeps scheduled rules.
 */
#define RUN_MAX_SET 64 /* --set options */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <uv.h>
#include <zmq.h>
#include <errno.h>

#include "run_net.h"
#include "tw_acked.h"
#include "tw_cli.h"
#include "tw_error.h"
#include "tw_nats.h"
#include "tw_nats_group.h"
#include "tw_pipeline.h"
#include "tw_record.h"
#include "tw_rules.h"
#include "tw_schema.h"
#include "tw_shards.h"
#include "tw_sink.h"
#include "tw_sink_nats.h"
#include "tw_sink_zmq.h"
#include "tw_source.h"

#define RUN_POLL_BATCH 4096  /* records per source poll */
#define RUN_TICK_MS 100      /* listen mode: drain + commit interval */
#define RUN_DRAIN_BUDGET_MS 50 /* listen mode: time spent draining per loop turn before yielding */

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch run --rules FILE (--input FILE|- | --listen ENDPOINT | --ingest ENDPOINT)\n"
      "                      [options]\n"
      "       tutorwatch run --rules FILE --nats URL --partitions P --state DIR [nats options]\n"
      "\n"
      "Evaluate the rules in FILE over payment, refund, consumption, enrollment, complaint,\n"
      "institution, escrow and staff events, keep aggregate state in LMDB, and write alerts.\n"
      "\n"
      "input (exactly one):\n"
      "  --input FILE|-        read events from FILE or stdin, process to the end, then exit\n"
      "  --listen ENDPOINT     bind a ZeroMQ PULL socket (e.g. tcp://127.0.0.1:7600) and serve "
      "until\n"
      "                        SIGINT/SIGTERM; send events to it with `tutorwatch send`. SIGHUP\n"
      "                        reloads the rule file: unchanged aggregates keep their state, a\n"
      "                        file that does not compile is refused and the old rules go on\n"
      "  --ingest ENDPOINT     acknowledged ingest: bind a ZeroMQ ROUTER; `send --acked` "
      "batches are\n"
      "                        acknowledged once committed, and resent after a restart "
      "(single shard)\n"
      "  --nats URL            join a group of engines on NATS JetStream instead (a server, or a\n"
      "                        cluster as nats://h:p,nats://h:p,...): partitions of stream EVENTS\n"
      "                        are shared by leases, each message acknowledged after the commit\n"
      "                        that includes it; alerts go to stream ALERTS on\n"
      "                        tw.alerts.<region>.<severity> with Nats-Msg-Id = alert_id\n"
      "                        (docs/scaling.md; serves until SIGINT/SIGTERM)\n"
      "\n"
      "nats options:\n"
      "  --partitions P        the partition count of the EVENTS stream (must be the stream's)\n"
      "  --engine-id ID        this engine's name in the group (default: host-pid)\n"
      "  --lease DUR           partition lease time (default 5s): a dead engine's partitions\n"
      "                        move to the others after about this long\n"
      "  --checkpoint-every DUR  partition checkpoints to the object store (default 30s)\n"
      "  --replicas N          copies of the streams and buckets it creates (default 1; 3 on a\n"
      "                        three-node cluster)\n"
      "  --format FMT          jsonl | msgpack | auto (default: from the file extension, .msgpack "
      "=\n"
      "                        msgpack; for --listen, detected per message)\n"
      "\n"
      "output:\n"
      "  --alerts FILE|-       append alerts as JSON lines to FILE, or stdout with '-' (default: "
      "stdout\n"
      "                        when no --feed is given)\n"
      "  --feed ENDPOINT       publish alerts on a ZeroMQ XPUB regulator feed (e.g. "
      "tcp://127.0.0.1:7601);\n"
      "                        topic '<region>/<severity>/<rule>', so `feed --topic 44` gets "
      "Guangdong\n"
      "  --self-check-feed ENDPOINT  the institutions' self-check feed (XPUB): topic = credit\n"
      "                        code; payload without what only a regulator may see\n"
      "  --history ENDPOINT    serve the feed history (ROUTER): alerts of a prefix since a "
      "sequence,\n"
      "                        for `feed --since SEQ --history ENDPOINT` (docs/feeds.md)\n"
      "  --feed-format FMT     payload of feeds and history: msgpack (default) or json\n"
      "  --feed-hwm N          alerts queued per subscriber before the feed drops (and counts) "
      "for it\n"
      "                        (default 100000); the history keeps them all\n"
      "  --keys FILE           YAML list of clients' public keys with role and scope; every "
      "endpoint\n"
      "                        then uses CURVE and admits only those keys, each within its "
      "scope.\n"
      "                        Without it, endpoints must be loopback or ipc://\n"
      "  --server-key FILE     the engine's secret key (from `tutorwatch keys gen NAME`), with "
      "--keys\n"
      "  --control ENDPOINT    the alert lifecycle: states, assignees, comments, snoozes, "
      "escalation and\n"
      "                        a hash-chained audit log (STATE/lifecycle); `tutorwatch alerts` "
      "talks to it\n"
      "  --escalation SPEC     deadlines to acknowledge an open alert before it escalates to the "
      "region\n"
      "                        one level up (default critical=24h,high=72h; 0s: none)\n"
      "  --record DIR          also keep every accepted event (pseudonymised, deduplicated) in an\n"
      "                        append-only event record in DIR, for `tutorwatch replay`\n"
      "  --dead-letter FILE    append rejected events, one JSON line each with the reason, "
      "position and\n"
      "                        raw input (default: dead-letter.jsonl in the current directory)\n"
      "\n"
      "state and rules:\n"
      "  --rules FILE          the YAML rule file (e.g. rules/packs/default.yaml)\n"
      "  --set NAME=VALUE      override a param of the rule file (repeatable), e.g.\n"
      "                        --set cap_amount=3000yuan (a param of the default pack); kept\n"
      "                        for reloads\n"
      "  --schema FILE         the event schema (default: schema.yaml beside the rule file, else\n"
      "                        the shipped rules/packs/schema.yaml)\n"
      "  --state DIR           LMDB state directory; a second run on it continues its aggregates "
      "and\n"
      "                        cooldowns (default: a temporary directory removed at exit)\n"
      "  --batch N             group commit every N records (default 100000; 10000 with\n"
      "                        --listen or --ingest, which also commit whenever the input\n"
      "                        is idle and every 100 ms)\n"
      "  -h, --help            show this help\n"
      "  --no-sync             do not fsync LMDB commits (faster; a crash may lose the last "
      "commits)\n"
      "  --shards N            N worker threads, each owning the institutions whose code hashes "
      "to\n"
      "                        it, with its own LMDB environment in DIR/shard-K (default 1; a\n"
      "                        state keeps the count it was made with)\n"
      "\n"
      "event time (docs/engine.md):\n"
      "  --allowed-lateness D  how far behind the newest event time an event may arrive and still\n"
      "                        be processed in event-time order (default 1h; e.g. 0s, 90s, 15m).\n"
      "                        Rules see an event once the stream is D past it (or it pauses for\n"
      "                        1 s when serving). Later events are processed at once while state\n"
      "                        holds their window, else dead-lettered as too_late\n"
      "  --max-future-skew D   dead-letter as future_skew an event this far ahead of the wall "
      "clock\n"
      "                        (serving), or a jump this far ahead of a replayed stream that "
      "later\n"
      "                        events contradict (default 10m)\n"
      "  --idle-flush D        serving: a pause of D without records processes the events held\n"
      "                        for the watermark (default 1s; 0s: never, they wait for event time\n"
      "                        or, on a live stream, the wall clock)\n"
      "  --dedup-horizon D     an event whose event_id was processed within D of event time is a\n"
      "                        duplicate: counted, not processed again (default 7d; 0s: none)\n"
      "\n"
      "A one-line summary goes to stderr. Exit status: 0 done, 1 bad rules/schema or unreadable\n"
      "input, 2 usage error, 70 internal failure (state store, out of memory).\n");
}

static volatile sig_atomic_t g_stop;
static void on_stop_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The engine behind `run`: one pipeline, or N shards (threads) sharing the outputs. */
typedef struct engine {
  tw_outputs_t out; /* sinks and dead-letter file, shared by the pipeline(s) */
  tw_pipeline_t *p; /* one pipeline (also what --listen serves) */
  tw_shards_t *sh;  /* or shards */
} engine_t;

static int engine_track(engine_t *e, const char *path, uint64_t *off, uint64_t *line) {
  return e->sh ? tw_shards_track_input(e->sh, path, off, line)
               : tw_pipeline_track_input(e->p, path, off, line);
}

static int engine_republish(engine_t *e, uint64_t *count) {
  return e->sh ? tw_shards_republish(e->sh, count) : tw_pipeline_republish(e->p, count);
}

/* engine_finish: the input has ended or the engine stops: what waits for the watermark is
 * processed, and everything is committed. */
static int engine_finish(engine_t *e, int ok_so_far) {
  if (e->sh) return tw_shards_finish(e->sh);
  int rc = ok_so_far ? tw_pipeline_flush(e->p) : 0;
  int crc = tw_pipeline_commit(e->p);
  return rc != 0 ? rc : crc;
}

static void engine_stats(const engine_t *e, tw_pipeline_stats_t *st) {
  if (e->sh)
    tw_shards_stats(e->sh, st);
  else
    tw_pipeline_stats(e->p, st);
}

static int engine_close(engine_t *e) {
  int rc = e->sh ? tw_shards_close(e->sh) : tw_pipeline_close(e->p);
  int orc = tw_outputs_close(&e->out);
  return rc != 0 ? rc : orc;
}

/* ---- listen mode ---------------------------------------------------------------------------- */

typedef struct serve {
  uv_loop_t loop;
  uv_poll_t poll;
  uv_timer_t timer;
  uv_signal_t sigint, sigterm, sighup;
  tw_source_t *src;
  const char *rules_path; /* reloaded on SIGHUP */
  const char *state_dir;  /* engine.pid and reload.status live here (tutorwatch reload) */
  unsigned reloads;
  engine_t *e;
  int rc;
  int stopping; /* a signal arrived: take nothing more, commit, exit */
} serve_t;

static void on_tick(uv_timer_t *h);
static int64_t wall_ms(void);

static void serve_stop(serve_t *s) {
  s->stopping = 1;
  uv_poll_stop(&s->poll);
  uv_timer_stop(&s->timer);
  uv_signal_stop(&s->sigint);
  uv_signal_stop(&s->sigterm);
  uv_signal_stop(&s->sighup);
  uv_close((uv_handle_t *)&s->poll, NULL);
  uv_close((uv_handle_t *)&s->timer, NULL);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_close((uv_handle_t *)&s->sighup, NULL);
}

/* Drain what the socket holds for at most RUN_DRAIN_BUDGET_MS per call (one poll at least), so
 * a sender that never pauses cannot starve the loop: a signal is seen within a turn, whatever the
 * machine's speed. When the budget is spent the timer is re-armed to fire 1 ms later: ZMQ_FD is
 * edge-triggered and would not wake us for what is left. Not 0 ms: libuv 1.44 runs a timer
 * re-armed with 0 from its own callback again in the same phase, so the loop would never reach
 * its poll phase, where signals are seen. */
static void serve_drain(serve_t *s) {
  uint64_t start = uv_hrtime();
  int took = 0;
  for (int i = 0; !s->stopping; i++) {
    if (i > 0 && uv_hrtime() - start >= (uint64_t)RUN_DRAIN_BUDGET_MS * 1000000u) {
      uv_timer_start(&s->timer, on_tick, 1, RUN_TICK_MS);
      return;
    }
    int n = s->e->sh ? s->src->vt->poll(s->src, RUN_POLL_BATCH, tw_shards_record, s->e->sh)
                     : s->src->vt->poll(s->src, RUN_POLL_BATCH, tw_pipeline_record, s->e->p);
    if (n > 0) took = 1;
    if (n == 0) {
      /* The input went idle: group-commit what this drain took now rather than on the tick, so an
       * alert leaves as soon as its batch is durable. Under load the socket is rarely empty and
       * batches grow by themselves (up to --batch): the events that arrive during one commit's
       * fsync make the next batch. Shards commit in their own threads, in order with their
       * records: each is sent a tick, which commits what it holds. */
      int rc = 0;
      if (took && s->e->sh)
        rc = tw_shards_tick(s->e->sh, wall_ms());
      else if (took && tw_pipeline_pending(s->e->p) > 0)
        rc = tw_pipeline_commit(s->e->p);
      if (rc != 0) {
        s->rc = rc;
        serve_stop(s);
      }
      return;
    }
    if (n < 0) {
      fprintf(stderr, "tutorwatch run: stopping: %s\n", tw_strerror(n));
      s->rc = n;
      serve_stop(s);
      return;
    }
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)status, (void)events;
  serve_drain(h->data);
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_tick(uv_timer_t *h) {
  serve_t *s = h->data;
  serve_drain(s);
  if (s->rc == 0 && !s->stopping) {
    /* Shards tick (and commit) in their own threads, in order with their records. */
    int rc = s->e->sh ? tw_shards_tick(s->e->sh, wall_ms()) : tw_pipeline_tick(s->e->p, wall_ms());
    if (rc != 0) {
      s->rc = rc;
      serve_stop(s);
      return;
    }
  }
  if (s->rc == 0 && !s->e->sh && tw_pipeline_pending(s->e->p) > 0) {
    int rc = tw_pipeline_commit(s->e->p);
    if (rc != 0) {
      s->rc = rc;
      serve_stop(s);
    }
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  serve_t *s = h->data;
  if (s->stopping) return;
  fprintf(stderr, "tutorwatch run: %s received, shutting down\n",
          signum == SIGINT ? "SIGINT" : "SIGTERM");
  /* What was received is processed; what is still queued in ZeroMQ is not taken. */
  serve_stop(s);
}

/* SIGHUP: load the rule file again; a file that does not compile is refused and the old rules
 * go on. Alerts already raised are committed and published first; events still waiting for the
 * watermark are processed under the new rules. */
/* reload.status: the outcome of the last reload, for `tutorwatch reload`, written whole
 * (temporary file + rename) so a reader never sees half of it. */
static void write_reload_status(serve_t *s, int ok, const char *msg) {
  char path[4200], tmp[4300];
  snprintf(path, sizeof path, "%s/reload.status", s->state_dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  json_t *o = json_pack("{s:I,s:I,s:b,s:s}", "pid", (json_int_t)getpid(), "seq",
                        (json_int_t)++s->reloads, "ok", ok, "message", msg);
  if (o == NULL) return;
  if (json_dump_file(o, tmp, JSON_COMPACT) == 0) rename(tmp, path);
  json_decref(o);
}

static void on_reload(uv_signal_t *h, int signum) {
  (void)signum;
  serve_t *s = h->data;
  char msg[2048];
  serve_drain(s);
  if (s->stopping) return;
  int rc = s->e->sh ? tw_shards_reload(s->e->sh, s->rules_path, msg, sizeof msg)
                    : tw_pipeline_reload(s->e->p, s->rules_path, msg, sizeof msg);
  write_reload_status(s, rc == 0, msg);
  if (rc == 0) {
    fprintf(stderr, "tutorwatch run: SIGHUP: reloaded %s: %s\n", s->rules_path, msg);
  } else if (rc == TW_ESTATE || rc == TW_ENOMEM || rc == TW_EIO) {
    fprintf(stderr, "tutorwatch run: SIGHUP: reload failed: %s; stopping\n", msg);
    s->rc = rc;
    serve_stop(s);
  } else {
    fprintf(stderr, "tutorwatch run: SIGHUP: %s refused, the old rules go on: %s\n", s->rules_path,
            msg);
  }
}

static int serve(tw_source_t *src, engine_t *e, const char *endpoint, const char *rules_path,
                 const char *state_dir) {
  serve_t s;
  memset(&s, 0, sizeof s);
  s.src = src;
  s.e = e;
  s.rules_path = rules_path;
  s.state_dir = state_dir;
  char pid_path[4200];
  snprintf(pid_path, sizeof pid_path, "%s/engine.pid", state_dir);
  uv_loop_init(&s.loop);
  s.poll.data = s.timer.data = s.sigint.data = s.sigterm.data = s.sighup.data = &s;
  uv_poll_init(&s.loop, &s.poll, src->vt->fd(src));
  uv_poll_start(&s.poll, UV_READABLE, on_poll);
  uv_timer_init(&s.loop, &s.timer);
  uv_timer_start(&s.timer, on_tick, RUN_TICK_MS, RUN_TICK_MS);
  uv_signal_init(&s.loop, &s.sigint);
  uv_signal_start(&s.sigint, on_signal, SIGINT);
  uv_signal_init(&s.loop, &s.sigterm);
  uv_signal_start(&s.sigterm, on_signal, SIGTERM);
  uv_signal_init(&s.loop, &s.sighup);
  uv_signal_start(&s.sighup, on_reload, SIGHUP);
  /* engine.pid: how `tutorwatch reload --state DIR` finds this engine, written once SIGHUP is
   * handled. The file stays locked (flock) while the engine serves, so a reload can tell a live
   * engine from a stale pid that may by now belong to another process. */
  int pid_fd = open(pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (pid_fd >= 0 && flock(pid_fd, LOCK_EX | LOCK_NB) == 0) {
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (ftruncate(pid_fd, 0) != 0 || pwrite(pid_fd, line, (size_t)n, 0) != n)
      fprintf(stderr, "tutorwatch run: cannot write %s; `tutorwatch reload` will not find it\n",
              pid_path);
  } else if (pid_fd >= 0) {
    fprintf(stderr, "tutorwatch run: another engine serves %s (%s is locked)\n", state_dir,
            pid_path);
    close(pid_fd);
    pid_fd = -1;
  }
  fprintf(stderr,
          "tutorwatch run: listening on %s (ZeroMQ %s); SIGHUP reloads the rules, SIGINT or "
          "SIGTERM stops\n",
          endpoint, strcmp(src->vt->name, "zmq-router") == 0 ? "ROUTER, acknowledged" : "PULL");
  serve_drain(&s); /* messages that arrived before the loop started */
  uv_run(&s.loop, UV_RUN_DEFAULT);
  if (pid_fd >= 0) {
    unlink(pid_path);
    close(pid_fd); /* releases the lock */
  }
  signal(SIGHUP, SIG_IGN); /* libuv restored the default action when its handle closed */
  uv_loop_close(&s.loop);
  return s.rc;
}

/* ---- the command ---------------------------------------------------------------------------- */

/* Acknowledged ingest: after each commit, the ROUTER source acknowledges what it covers. */
static void ack_after_commit(void *ud, uint64_t finished_below_offset) {
  tw_source_t *const *src = ud;
  tw_acked_committed(*src, finished_below_offset);
}

/* A plain reason for a failed open: the system's or ZeroMQ's own words where there are some. */
static const char *open_error(int rc, const char *target) {
  static char buf[256];
  int e = errno;
  if (rc == TW_EZMQ && e != 0) {
    snprintf(buf, sizeof buf, "%s%s", zmq_strerror(e),
             strstr(target, "://") == NULL ? " (an endpoint looks like tcp://127.0.0.1:7600)" : "");
    return buf;
  }
  if ((rc == TW_EIO || rc == TW_ENOENT) && e != 0) return strerror(e);
  return tw_strerror(rc);
}

static int open_sink(tw_outputs_t *o, const char *kind, const char *target, tw_sink_t **opened) {
  const tw_sink_vt_t *vt = tw_sink_find(kind);
  tw_sink_t *sink = NULL;
  errno = 0;
  int rc = vt ? vt->open(target, &sink) : TW_ENOENT;
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: cannot open %s output '%s': %s\n", kind, target,
            open_error(rc, target));
    return rc;
  }
  rc = tw_outputs_add_sink(o, sink);
  if (rc != 0) {
    vt->close(sink);
    return rc;
  }
  if (opened != NULL) *opened = sink;
  return 0;
}

static const char *plural(uint64_t n, const char *one, const char *many) {
  return n == 1 ? one : many;
}

static void print_summary(const engine_t *e, const run_net_t *net, double secs,
                          const char *state_dir, int temp_state, int served) {
  tw_pipeline_stats_t st;
  engine_stats(e, &st);
  char rej[4200] = "", extra[512] = "", rate[96] = "";
  if (st.rejected > 0) snprintf(rej, sizeof rej, " (dead-letter: %s)", e->out.dead_letter_path);
  if (st.duplicates > 0)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
             ", %llu %s (event_id already processed)", (unsigned long long)st.duplicates,
             plural(st.duplicates, "duplicate", "duplicates"));
  if (st.incomplete > 0)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
             ", 1 incomplete last record left for the grown file");
  if (st.evicted > 0)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", %llu idle state %s evicted",
             (unsigned long long)st.evicted, plural(st.evicted, "entry", "entries"));
  if (st.late > 0)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
             ", %llu late (behind the watermark, processed at once)", (unsigned long long)st.late);
  if (st.eval_errors > 0)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", %llu rule evaluation %s",
             (unsigned long long)st.eval_errors, plural(st.eval_errors, "error", "errors"));
  run_net_summary(net, extra, sizeof extra);
  /* Served time includes idle waiting, so a rate over it would mislead. */
  if (served)
    snprintf(rate, sizeof rate, ", served %.2f s", secs);
  else
    snprintf(rate, sizeof rate, " in %.2f s (%.0f events/s)", secs,
             secs > 0 ? (double)st.read / secs : 0.0);
  fprintf(stderr,
          "tutorwatch run: %llu %s read, %llu accepted, %llu rejected%s, %llu %s "
          "(%llu held back by cooldown)%s%s, %llu group %s, state %s%s\n",
          (unsigned long long)st.read, plural(st.read, "event", "events"),
          (unsigned long long)st.accepted, (unsigned long long)st.rejected, rej,
          (unsigned long long)st.alerts, plural(st.alerts, "alert", "alerts"),
          (unsigned long long)st.suppressed, extra, rate, (unsigned long long)st.commits,
          plural(st.commits, "commit", "commits"), state_dir,
          temp_state ? " (temporary, removed)" : "");
}

/* ---- NATS JetStream (docs/scaling.md) -------------------------------------------------------- */

/* The rule file loads and compiles (checked before joining a group: a missing or broken one
 * would otherwise fail only when the first partition is taken). Says why not. */
static bool rules_compile(const tw_pipeline_opts_t *po) {
  char schema_path[4096];
  tw_schema_t *schema = NULL;
  tw_schema_error_t serr;
  if (po->schema_path != NULL)
    snprintf(schema_path, sizeof schema_path, "%s", po->schema_path);
  else if (tw_schema_path_for_rules(po->rules_path, schema_path, sizeof schema_path) != 0)
    schema_path[0] = '\0';
  if (schema_path[0] == '\0' || tw_schema_load(schema_path, &schema, &serr) != 0) {
    fprintf(stderr, "tutorwatch run: the schema for %s does not load (%s)\n", po->rules_path,
            schema_path);
    return false;
  }
  tw_rules_load_opts_t lo = {.set = po->params_set, .n_set = po->n_params_set};
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t rerr;
  int rc = tw_rules_load_ex(po->rules_path, NULL, 0, schema, &lo, &rs, &rerr);
  if (rc != 0)
    fprintf(stderr, "tutorwatch run: %s:%d:%d: %s\n", rerr.file[0] ? rerr.file : po->rules_path,
            rerr.line, rerr.col, rerr.message);
  tw_rules_free(rs);
  tw_schema_free(schema);
  return rc == 0;
}

typedef struct nats_args {
  const char *url, *engine_id;
  int partitions, replicas;
  int64_t lease_ms, checkpoint_ms;
} nats_args_t;

/* A serving engine without syncs says so: its figures are not those of a durable engine. */
static void warn_no_sync(void) {
  fprintf(stderr,
          "tutorwatch run: --no-sync: commits are not flushed to the disk; an operating "
          "system crash or a power loss can lose the newest events and alerts\n");
}

/* run --nats: join the group of engines sharing the EVENTS stream's partitions (leases in a
 * key-value bucket, docs/scaling.md) until SIGINT/SIGTERM. */
static int run_nats(tw_pipeline_opts_t *po, const nats_args_t *na, const char *alerts,
                    tw_format_t format) {
  if (po->rules_path == NULL || na->url == NULL || na->partitions == 0) {
    fprintf(stderr, "tutorwatch run: --nats URL needs --partitions P and --rules FILE\n");
    return 2;
  }
  if (po->state_dir == NULL) {
    fprintf(stderr, "tutorwatch run: --nats needs --state DIR (each partition's state is kept "
                    "there)\n");
    return 2;
  }
  if (mkdir(po->state_dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "tutorwatch run: cannot create '%s': %s\n", po->state_dir, strerror(errno));
    return 1;
  }
  tw_outputs_t out;
  memset(&out, 0, sizeof out);
  char err[4096];
  int status = 0;
  if (po->no_sync) warn_no_sync();
  int rc = tw_outputs_open(&out, po->dead_letter_path, po->no_sync, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: %s\n", err);
    return 1;
  }
  if (alerts != NULL && open_sink(&out, "jsonl", alerts, NULL) != 0) {
    tw_outputs_close(&out);
    return 1;
  }
  tw_sink_t *sink = NULL;
  rc = tw_sink_nats_open(na->url, na->replicas, &sink, err, sizeof err);
  if (rc == 0) {
    rc = tw_outputs_add_sink(&out, sink);
    if (rc != 0) sink->vt->close(sink);
  }
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: cannot open the ALERTS stream at %s: %s\n", na->url,
            err[0] ? err : tw_strerror(rc));
    tw_outputs_close(&out);
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGHUP, SIG_IGN);
  tw_nats_group_opts_t go;
  memset(&go, 0, sizeof go);
  go.url = na->url;
  go.partitions = na->partitions;
  go.replicas = na->replicas;
  go.engine_id = na->engine_id;
  go.lease_ms = na->lease_ms;
  go.checkpoint_ms = na->checkpoint_ms;
  go.format = format;
  go.pipeline = *po;
  go.pipeline.shared_outputs = &out;
  go.stop = &g_stop;
  tw_nats_group_stats_t gs;
  double t0 = now_s();
  rc = tw_nats_group_run(&go, &gs, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: stopped: %s\n", err[0] ? err : tw_strerror(rc));
    status = (rc == TW_EIO || rc == TW_EINVAL) ? 1 : 70;
  }
  fprintf(stderr,
          "tutorwatch run: %llu events in %.1f s; %llu alerts; %llu commits; partitions taken "
          "%llu, given up %llu, lost %llu; checkpoints written %llu, restored %llu; %llu journal "
          "alerts handed over again; %llu alerts already in ALERTS\n",
          (unsigned long long)gs.records, now_s() - t0, (unsigned long long)gs.alerts,
          (unsigned long long)gs.commits, (unsigned long long)gs.acquired,
          (unsigned long long)gs.released, (unsigned long long)gs.lost,
          (unsigned long long)gs.checkpoints, (unsigned long long)gs.restored,
          (unsigned long long)gs.republished, tw_sink_nats_duplicates(sink));
  if (tw_outputs_close(&out) != 0 && status == 0) status = 1;
  return status;
}

int tw_cmd_run(int argc, char **argv) {
  static const struct option longopts[] = {{"rules", required_argument, NULL, 'r'},
                                           {"input", required_argument, NULL, 'i'},
                                           {"format", required_argument, NULL, 'f'},
                                           {"listen", required_argument, NULL, 'l'},
                                           {"feed", required_argument, NULL, 'F'},
                                           {"alerts", required_argument, NULL, 'a'},
                                           {"dead-letter", required_argument, NULL, 'd'},
                                           {"state", required_argument, NULL, 's'},
                                           {"schema", required_argument, NULL, 'S'},
                                           {"batch", required_argument, NULL, 'b'},
                                           {"no-sync", no_argument, NULL, 'n'},
                                           {"allowed-lateness", required_argument, NULL, 'L'},
                                           {"max-future-skew", required_argument, NULL, 'K'},
                                           {"dedup-horizon", required_argument, NULL, 'D'},
                                           {"shards", required_argument, NULL, 'N'},
                                           {"set", required_argument, NULL, 'P'},
                                           {"idle-flush", required_argument, NULL, 'I'},
                                           {"self-check-feed", required_argument, NULL, 'C'},
                                           {"history", required_argument, NULL, 'Y'},
                                           {"feed-format", required_argument, NULL, 'M'},
                                           {"keys", required_argument, NULL, 'k'},
                                           {"server-key", required_argument, NULL, 'x'},
                                           {"ingest", required_argument, NULL, 'G'},
                                           {"control", required_argument, NULL, 'O'},
                                           {"escalation", required_argument, NULL, 'E'},
                                           {"feed-hwm", required_argument, NULL, 'W'},
                                           {"record", required_argument, NULL, 'R'},
                                           {"nats", required_argument, NULL, 1000},
                                           {"partitions", required_argument, NULL, 1001},
                                           {"engine-id", required_argument, NULL, 1002},
                                           {"lease", required_argument, NULL, 1003},
                                           {"checkpoint-every", required_argument, NULL, 1004},
                                           {"replicas", required_argument, NULL, 1005},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  nats_args_t na;
  memset(&na, 0, sizeof na);
  const char *input = NULL, *listen_ep = NULL, *feed = NULL, *alerts = NULL, *ingest_ep = NULL,
             *record = NULL;
  tw_recorder_t *recorder = NULL;
  char state_tmp[] = "/tmp/tutorwatch-state-XXXXXX";
  tw_pipeline_opts_t po;
  tw_source_opts_t so;
  run_net_t net;
  memset(&net, 0, sizeof net);
  memset(&po, 0, sizeof po);
  memset(&so, 0, sizeof so);
  po.allowed_lateness_ms = -1; /* the defaults */
  po.max_future_skew_ms = -1;
  po.dedup_horizon_ms = -1;
  /* SIGHUP reloads the rules when serving; at any other moment it must not end the process. */
  signal(SIGHUP, SIG_IGN);
  int c, have_format = 0, shards = 1;
  /* --set values point into argv, which outlives the pipeline and its reloads. */
  static const char *params[RUN_MAX_SET];
  size_t n_params = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'r':
        po.rules_path = optarg;
        break;
      case 'i':
        input = optarg;
        break;
      case 'l':
        listen_ep = optarg;
        break;
      case 'F':
        feed = optarg;
        break;
      case 'a':
        alerts = optarg;
        break;
      case 'R':
        record = optarg;
        break;
      case 'd':
        po.dead_letter_path = optarg;
        break;
      case 's':
        po.state_dir = optarg;
        break;
      case 'S':
        po.schema_path = optarg;
        break;
      case 'n':
        po.no_sync = true;
        break;
      case 'L':
      case 'K':
      case 'I':
      case 'D': {
        int64_t ms;
        if (tw_cli_duration_ms(optarg, &ms) != 0) {
          fprintf(stderr,
                  "tutorwatch run: --%s wants a duration such as 0s, 90s, 15m, 1h or 1d, not "
                  "'%s'\n",
                  c == 'L'   ? "allowed-lateness"
                  : c == 'K' ? "max-future-skew"
                  : c == 'I' ? "idle-flush"
                             : "dedup-horizon",
                  optarg);
          return 2;
        }
        if (c == 'I')
          po.idle_flush_ms = ms > 0 ? ms : -1; /* 0s: never */
        else if (c == 'L')
          po.allowed_lateness_ms = ms;
        else if (c == 'K')
          po.max_future_skew_ms = ms;
        else
          po.dedup_horizon_ms = ms;
        break;
      }
      case 'N': {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > TW_SHARDS_MAX) {
          fprintf(stderr, "tutorwatch run: --shards wants an integer from 1 to %d, not '%s'\n",
                  TW_SHARDS_MAX, optarg);
          return 2;
        }
        shards = (int)n;
        break;
      }
      case 'b': {
        char *end;
        long long n = strtoll(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > 10000000) {
          fprintf(stderr, "tutorwatch run: --batch wants an integer from 1 to 10000000, not '%s'\n",
                  optarg);
          return 2;
        }
        po.batch_events = (size_t)n;
        break;
      }
      case 'f':
        if (tw_format_parse(optarg, &so.format) != 0) {
          fprintf(stderr, "tutorwatch run: unknown --format '%s' (jsonl, msgpack or auto)\n",
                  optarg);
          return 2;
        }
        have_format = 1;
        break;
      case 'P':
        if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
          fprintf(stderr, "tutorwatch run: --set wants NAME=VALUE, not '%s'\n", optarg);
          return 2;
        }
        if (n_params == RUN_MAX_SET) {
          fprintf(stderr, "tutorwatch run: at most %d --set options\n", RUN_MAX_SET);
          return 2;
        }
        params[n_params++] = optarg;
        break;
      case 'C':
        net.self_check = optarg;
        break;
      case 'Y':
        net.history = optarg;
        break;
      case 'M':
        if (strcmp(optarg, "msgpack") == 0) {
          net.format = TW_FEED_MSGPACK;
        } else if (strcmp(optarg, "json") == 0) {
          net.format = TW_FEED_JSON;
        } else {
          fprintf(stderr, "tutorwatch run: --feed-format is msgpack or json, not '%s'\n", optarg);
          return 2;
        }
        break;
      case 'k':
        net.keys_path = optarg;
        break;
      case 'x':
        net.server_key_path = optarg;
        break;
      case 'G':
        ingest_ep = optarg;
        break;
      case 'O':
        net.control = optarg;
        break;
      case 'E':
        net.escalation = optarg;
        break;
      case 'W': {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > 10000000) {
          fprintf(stderr, "tutorwatch run: --feed-hwm wants 1 to 10000000 messages, not '%s'\n",
                  optarg);
          return 2;
        }
        net.feed_hwm = (int)n;
        break;
      }
      case 1000:
        na.url = optarg;
        break;
      case 1001: {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > TW_NATS_PARTITIONS_MAX) {
          fprintf(stderr, "tutorwatch run: --partitions wants an integer from 1 to %d, not '%s'\n",
                  TW_NATS_PARTITIONS_MAX, optarg);
          return 2;
        }
        na.partitions = (int)n;
        break;
      }
      case 1002:
        na.engine_id = optarg;
        if (optarg[0] == '\0' || strlen(optarg) > TW_NATS_ENGINE_ID_MAX ||
            strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") !=
                strlen(optarg)) {
          fprintf(stderr,
                  "tutorwatch run: --engine-id wants 1 to %d letters, digits, '-' or '_', not "
                  "'%s'\n",
                  TW_NATS_ENGINE_ID_MAX, optarg);
          return 2;
        }
        break;
      case 1003:
      case 1004: {
        int64_t ms = 0;
        if (tw_cli_duration_ms(optarg, &ms) != 0 || ms <= 0 || (c == 1003 && ms < 1000)) {
          fprintf(stderr, "tutorwatch run: --%s wants a duration%s (like 5s), not '%s'\n",
                  c == 1003 ? "lease" : "checkpoint-every", c == 1003 ? " of at least 1s" : "",
                  optarg);
          return 2;
        }
        if (c == 1003)
          na.lease_ms = ms;
        else
          na.checkpoint_ms = ms;
        break;
      }
      case 1005: {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > 5) {
          fprintf(stderr, "tutorwatch run: --replicas wants 1 to 5, not '%s'\n", optarg);
          return 2;
        }
        na.replicas = (int)n;
        break;
      }
      case 'h':
        usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch run --help' lists the options\n");
        return 2;
    }
  }
  po.params_set = params;
  po.stop = &g_stop; /* SIGINT/SIGTERM during a long run of scheduled sweeps */
  po.n_params_set = n_params;
  if (optind < argc) {
    fprintf(stderr, "tutorwatch run: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (na.url != NULL || na.partitions != 0 || na.engine_id != NULL || na.lease_ms != 0 ||
      na.checkpoint_ms != 0 || na.replicas != 0) {
    if (na.url == NULL) {
      fprintf(stderr, "tutorwatch run: --partitions, --engine-id, --lease, --checkpoint-every and "
                      "--replicas go with --nats URL\n");
      return 2;
    }
    const char *clash = input != NULL         ? "--input"
                        : listen_ep != NULL   ? "--listen"
                        : ingest_ep != NULL   ? "--ingest"
                        : shards > 1          ? "--shards"
                        : record != NULL      ? "--record"
                        : feed != NULL        ? "--feed"
                        : net.self_check      ? "--self-check-feed"
                        : net.history         ? "--history"
                        : net.control         ? "--control"
                                              : NULL;
    if (clash != NULL) {
      fprintf(stderr,
              "tutorwatch run: %s does not go with --nats: the group reads stream EVENTS (no "
              "--input, --listen, --ingest), each partition is its own state (no --shards), and "
              "alerts go to stream ALERTS (no ZeroMQ feeds, history or control; --alerts FILE "
              "works); docs/scaling.md\n",
              clash);
      return 2;
    }
    if (po.rules_path != NULL && !rules_compile(&po)) return 2;
    return run_nats(&po, &na, alerts, have_format ? so.format : TW_FORMAT_AUTO);
  }
  if (po.rules_path == NULL || (input != NULL) + (listen_ep != NULL) + (ingest_ep != NULL) != 1) {
    fprintf(stderr,
            "tutorwatch run: need --rules FILE and exactly one of --input, --listen or --ingest\n"
            "'tutorwatch run --help' lists the options\n");
    return 2;
  }
  if (input != NULL && !have_format) so.format = tw_format_from_path(input);
  if (ingest_ep != NULL && shards > 1) {
    fprintf(stderr,
            "tutorwatch run: --ingest works with one shard (acknowledgements follow one "
            "pipeline's commits)\n");
    return 2;
  }
  tw_source_t *src = NULL;
  if (ingest_ep != NULL) {
    listen_ep = ingest_ep; /* served like --listen; the source acknowledges after commits */
    po.on_commit = ack_after_commit;
    po.on_commit_ud = &src;
  }
  net.listen = listen_ep;
  net.feed = feed;
  int net_status = run_net_prepare(&net);
  if (net_status != 0) {
    run_net_close(&net);
    return net_status;
  }
  so.auth = net.auth;
  int temp_state = 0;
  if (po.state_dir == NULL) {
    if (mkdtemp(state_tmp) == NULL) {
      perror("tutorwatch run: cannot create a temporary state directory");
      return 70;
    }
    po.state_dir = state_tmp;
    temp_state = 1;
  }
  if (po.batch_events == 0 && listen_ep != NULL) po.batch_events = TW_PIPELINE_SERVE_BATCH;
  po.live = listen_ep != NULL;

  int status = 0, crc;
  double t0 = 0;
  engine_t eng;
  memset(&eng, 0, sizeof eng);
  char err[4096];
  if (po.no_sync && po.live) warn_no_sync();
  int rc = tw_outputs_open(&eng.out, po.dead_letter_path, po.no_sync, err, sizeof err);
  if (rc == 0 && record != NULL) {
    rc = tw_recorder_open(record, shards, po.no_sync, &recorder, err, sizeof err);
    po.record = recorder;
  }
  if (rc == 0) {
    po.shared_outputs = &eng.out;
    rc = shards > 1 ? tw_shards_open(&po, shards, &eng.out, &eng.sh, err, sizeof err)
                    : tw_pipeline_open(&po, &eng.p, err, sizeof err);
  }
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: %s\n", err);
    status = (rc == TW_ENOMEM || rc == TW_ESTATE) ? 70 : 1;
    goto done;
  }
  if (alerts != NULL || (feed == NULL && net.self_check == NULL && net.history == NULL)) {
    if (open_sink(&eng.out, "jsonl", alerts ? alerts : "-", NULL) != 0) {
      status = 1;
      goto done;
    }
  }
  if ((status = run_net_open_feeds(&net, &eng.out, po.state_dir, po.no_sync)) != 0) goto done;
  if (input != NULL && strcmp(input, "-") != 0) {
    struct stat st;
    if (stat(input, &st) == 0 && S_ISREG(st.st_mode)) {
      rc = engine_track(&eng, input, &so.start_offset_bytes, &so.start_line);
      if (rc != 0) {
        fprintf(stderr, "tutorwatch run: cannot read the position of '%s' in the state: %s\n",
                input, tw_strerror(rc));
        status = rc == TW_EIO ? 1 : 70;
        goto done;
      }
      if (so.start_offset_bytes > 0)
        fprintf(stderr,
                "tutorwatch run: state %s already holds %s up to %s %llu (byte %llu); "
                "resuming after it\n",
                po.state_dir, input, so.format == TW_FORMAT_MSGPACK ? "record" : "line",
                (unsigned long long)so.start_line, (unsigned long long)so.start_offset_bytes);
    }
  }
  uint64_t redone = 0;
  rc = engine_republish(&eng, &redone);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: cannot read the alert journal of state %s: %s\n", po.state_dir,
            tw_strerror(rc));
    status = 70;
    goto done;
  }
  if (redone > 0)
    fprintf(stderr,
            "tutorwatch run: %llu %s committed by an earlier run may not have reached the outputs "
            "(it stopped between a commit and the next); sent again from the journal\n",
            (unsigned long long)redone, plural(redone, "alert", "alerts"));
  const char *kind = ingest_ep ? "zmq-router" : listen_ep ? "zmq-pull" : "file";
  const char *target = listen_ep ? listen_ep : input;
  errno = 0;
  rc = tw_source_find(kind)->open(target, &so, &src);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: cannot open %s '%s': %s\n", listen_ep ? "endpoint" : "input",
            target, open_error(rc, target));
    status = 1;
    goto done;
  }
  t0 = now_s();
  if (listen_ep != NULL) {
    rc = serve(src, &eng, listen_ep, po.rules_path, po.state_dir);
  } else {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    tw_record_cb cb = eng.sh ? tw_shards_record : tw_pipeline_record;
    void *ud = eng.sh ? (void *)eng.sh : (void *)eng.p;
    do {
      rc = src->vt->poll(src, RUN_POLL_BATCH, cb, ud);
    } while (rc >= 0 && !g_stop);
    if (rc == TW_EOF || (g_stop && rc > 0)) rc = 0; /* a poll's record count is no error */
    if (g_stop) fprintf(stderr, "tutorwatch run: interrupted; committing what was processed\n");
  }
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: stopped: %s\n", tw_strerror(rc));
    status = (rc == TW_EIO) ? 1 : 70;
  }
  /* The input has ended or the engine is stopping: what waits for the watermark is processed
   * now (after an engine failure it is left unprocessed and uncommitted, for the next run). */
  crc = engine_finish(&eng, rc == 0);
  if (crc != 0) {
    fprintf(stderr, "tutorwatch run: stopped: %s\n", tw_strerror(crc));
    if (status == 0) status = 70;
  }
  tw_pipeline_stats_t fin;
  engine_stats(&eng, &fin);
  if (fin.sink_errors > 0) {
    fprintf(stderr, "tutorwatch run: %llu alert %s failed (is the output full or closed?); %s\n",
            (unsigned long long)fin.sink_errors, plural(fin.sink_errors, "write", "writes"),
            temp_state ? "run with --state DIR to keep every alert in an alert journal"
                       : "every alert is kept in the alert journal of the state directory");
    if (status == 0) status = 1;
  }
  print_summary(&eng, &net, now_s() - t0, po.state_dir, temp_state, listen_ep != NULL);
done:
  run_net_stop(&net);       /* no escalation may write to the outputs while they close */
  crc = engine_close(&eng); /* shard threads stop before the source their records point into */
  if (src != NULL) src->vt->close(src);
  if (tw_recorder_close(recorder) != 0) {
    fprintf(stderr, "tutorwatch run: cannot write the event record '%s'\n", record);
    if (crc == 0) crc = TW_EIO;
  }
  if (crc != 0 && status == 0) status = 70;
  if (temp_state) nftw(state_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  run_net_close(&net);
  return status;
}
