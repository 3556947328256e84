#define _GNU_SOURCE /* memmem */
/*
 * latency.c: send→alert latency at a fixed offered rate, over the real ZeroMQ path.
 *
 * The engine runs as its own process (`tutorwatch run --listen … --feed …`), exactly as operators
 * run it. This process pushes events on a schedule (event i is due at start + i/rate) from the
 * calling thread and, on a second thread, subscribes to the feed and matches every alert to the
 * event that triggered it by the event id (`g<seed>-<n>` from `tutorwatch gen`: n is the
 * record's position in the stream). The latency of an alert is the time it was received minus
 * the intended send time of its event, so when the sender or the engine falls behind, the delay
 * of every event queued behind is counted (Gil Tene's coordinated omission).
 *
 * Bounds: the histogram is fixed; the events sent are those loaded; the wait for the last alerts
 * is at most TW_BENCH_DRAIN_MS; the engine is given 10 s to listen and 30 s to stop after SIGTERM
 * before SIGKILL.
 */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "tw_bench.h"
#include "tw_error.h"
#include "tw_rules.h"

#define LAT_READY_MS 10000
#define LAT_QUIET_MS 1000 /* after the last send: stop once no alert came for this long */
#define LAT_SPIN_NS 20000
#define LAT_STOP_S \
  30 /* after SIGTERM, then SIGKILL */ /* closer to the due time than this: do not sleep */

static const char kProbeRule[] =
    "\n"
    "  # Appended by `tutorwatch bench` for latency runs: an alert for every prepaid payment.\n"
    "  - name: bench_probe\n"
    "    description: benchmark latency probe, fires on every payment\n"
    "    on: [payment]\n"
    "    by: institution_id\n"
    "    when: amount_fen >= 0yuan\n"
    "    severity: info\n"
    "    message: \"probe\"\n";

int tw_bench_probe_rules(const char *rules_path, const char *out_path) {
  FILE *in = fopen(rules_path, "rb"), *out = NULL;
  char *buf = NULL;
  int rc = TW_EIO;
  if (in == NULL) return TW_EIO;
  rc = TW_ENOMEM;
  buf = malloc(TW_RULES_MAX_FILE_BYTES + 1);
  if (buf == NULL) goto fail;
  rc = TW_EIO;
  size_t n = fread(buf, 1, TW_RULES_MAX_FILE_BYTES + 1, in);
  if (ferror(in)) goto fail;
  if (n > TW_RULES_MAX_FILE_BYTES) {
    rc = TW_ETOOBIG;
    goto fail;
  }
  buf[n] = '\0';
  /* The probe goes first in the top-level `rules:` block (block style, at column 0), not at the
   * end of the file, where a `tests:` section may stand. */
  size_t at = n;
  if (n >= 7 && memcmp(buf, "rules:\n", 7) == 0) {
    at = 7;
  } else {
    const char *r = strstr(buf, "\nrules:\n");
    if (r != NULL) at = (size_t)(r - buf) + 8;
  }
  if (at == n) { /* no block-style rules section: the file cannot take the probe */
    rc = TW_EINVAL;
    goto fail;
  }
  out = fopen(out_path, "wb");
  if (out == NULL) goto fail;
  if (fwrite(buf, 1, at, out) != at) goto fail;
  if (fputs(kProbeRule + 1, out) == EOF) goto fail; /* without its leading newline */
  if (fwrite(buf + at, 1, n - at, out) != n - at) goto fail;
  rc = 0;
fail:
  free(buf);
  fclose(in);
  if (out != NULL && fclose(out) != 0 && rc == 0) rc = TW_EIO;
  return rc;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The number n of an event id "g<seed>-<n>" that follows the first occurrence of key in
 * data[0..len): the first 'g' after the key, digits, '-', digits. 0 found, -1 not. Works on JSON
 * ("event_id":"g7-12") and msgpack (key string, then a string header, then the id). */
static int id_number_after(const char *data, size_t len, const char *key, uint64_t *n) {
  size_t klen = strlen(key);
  const char *p = NULL;
  for (size_t i = 0; i + klen <= len; i++)
    if (memcmp(data + i, key, klen) == 0) {
      p = data + i + klen;
      break;
    }
  if (p == NULL) return -1;
  const char *end = data + len;
  size_t hops = 0;
  while (p < end && *p != 'g' && hops++ < 8) p++;
  if (p >= end || *p != 'g') return -1;
  p++;
  const char *d = p;
  while (p < end && *p >= '0' && *p <= '9') p++;
  if (p == d || p >= end || *p != '-') return -1;
  p++;
  uint64_t v = 0;
  d = p;
  while (p < end && *p >= '0' && *p <= '9' && v < UINT64_MAX / 10)
    v = v * 10 + (uint64_t)(*p++ - '0');
  if (p == d) return -1;
  *n = v;
  return 0;
}

/* The port of "tcp://host:port", or -1. */
static int endpoint_port(const char *ep) {
  if (strncmp(ep, "tcp://", 6) != 0) return -1;
  const char *c = strrchr(ep, ':');
  if (c == NULL) return -1;
  char *end;
  long v = strtol(c + 1, &end, 10);
  return (*end == '\0' && v > 0 && v < 65536) ? (int)v : -1;
}

static int tcp_reachable(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Stop the engine: SIGTERM, up to LAT_STOP_S, then SIGKILL. 1 when it exited with status 0. */
static int stop_engine(pid_t pid) {
  int status = 0;
  kill(pid, SIGTERM);
  for (int i = 0; i < LAT_STOP_S * 100; i++) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (r < 0 && errno != EINTR) return 0;
    sleep_ms(10);
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return 0;
}

typedef struct lat_run {
  void *sub;
  int64_t t0_ns;
  double period_ns;
  uint64_t base;         /* the id number of record 0 */
  _Atomic uint64_t sent; /* events sent so far */
  _Atomic int64_t last_send_ns;
  _Atomic int sender_done;
  tw_bench_latency_t *out;
} lat_run_t;

static void *receiver(void *arg) {
  lat_run_t *r = arg;
  int64_t last_alert = 0;
  zmq_msg_t msg;
  for (;;) {
    zmq_pollitem_t it = {r->sub, 0, ZMQ_POLLIN, 0};
    int n = zmq_poll(&it, 1, 20);
    int64_t now = mono_ns();
    if (n > 0) {
      /* [topic, JSON]: the time is taken when the alert is received, before parsing. */
      int more = 1, frame = 0;
      while (more) {
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, r->sub, 0) < 0) {
          zmq_msg_close(&msg);
          break;
        }
        static const char kProbe[] = "\"rule\":\"bench_probe\"";
        if (frame == 1 && memmem(zmq_msg_data(&msg), zmq_msg_size(&msg), kProbe,
                                 sizeof kProbe - 1) == NULL) {
          /* another rule of the pack (a composite or a scheduled one, whose event is not a sent
           * record): not what is timed */
        } else if (frame == 1) {
          uint64_t id;
          if (id_number_after(zmq_msg_data(&msg), zmq_msg_size(&msg), "\"event_ids\":[", &id) ==
                  0 &&
              id >= r->base && id - r->base < atomic_load(&r->sent)) {
            int64_t due = r->t0_ns + (int64_t)((double)(id - r->base) * r->period_ns);
            tw_hist_record(&r->out->hist, now > due ? (uint64_t)(now - due) : 0);
            r->out->alerts++;
          } else {
            r->out->unmatched++;
          }
        }
        frame++;
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
      }
      last_alert = now;
      continue;
    }
    if (atomic_load(&r->sender_done)) {
      int64_t ls = atomic_load(&r->last_send_ns);
      int64_t quiet_since = last_alert > ls ? last_alert : ls;
      if (now - quiet_since > (int64_t)LAT_QUIET_MS * 1000000 ||
          now - ls > (int64_t)TW_BENCH_DRAIN_MS * 1000000)
        break;
    }
  }
  return NULL;
}

int tw_bench_latency(const tw_bench_latency_opts_t *o, tw_bench_latency_t *out, char *errbuf,
                     size_t errcap) {
  tw_hist_init(&out->hist);
  out->offered_per_s = o->rate_per_s;
  out->achieved_per_s = 0;
  out->sent = out->alerts = out->unmatched = 0;
  out->sender_lag_max_ms = 0;
  errbuf[0] = '\0';
  if (!(o->rate_per_s > 0) || o->in == NULL || o->in->n == 0) return TW_EINVAL;
  uint64_t want = (uint64_t)(o->rate_per_s * o->seconds);
  if (want == 0) want = 1;
  if (want > o->in->n) want = o->in->n;
  lat_run_t r;
  memset(&r, 0, sizeof r);
  r.out = out;
  r.period_ns = 1e9 / o->rate_per_s;
  {
    tw_record_t rec;
    tw_bench_input_record(o->in, 0, &rec);
    if (id_number_after(rec.data, rec.len_bytes, "event_id", &r.base) != 0) {
      snprintf(errbuf, errcap, "the first event has no id of the form g<seed>-<n> (from gen)");
      return TW_EINVAL;
    }
  }
  void *ctx = NULL, *push = NULL;
  pid_t engine = -1;
  int rc = TW_EIO, thread_started = 0;
  pthread_t th;
  if (mkdir(o->state_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(errbuf, errcap, "cannot create %s: %s", o->state_dir, strerror(errno));
    return TW_EIO;
  }
  char dl[4200];
  snprintf(dl, sizeof dl, "%s/dead-letter.jsonl", o->state_dir);
  char batch[24];
  snprintf(batch, sizeof batch, "%u", o->batch_events);
  char *argv[24] = {(char *)o->exe,
                    "run",
                    "--rules",
                    (char *)o->rules_path,
                    "--schema",
                    (char *)o->schema_path,
                    "--listen",
                    (char *)o->in_endpoint,
                    "--feed",
                    (char *)o->feed_endpoint,
                    "--feed-format", /* the alert's event_ids are read from its JSON */
                    "json",
                    "--state",
                    (char *)o->state_dir,
                    "--dead-letter",
                    dl,
                    "--allowed-lateness",
                    "0s"};
  size_t argc = 18;
  if (o->batch_events > 0) {
    argv[argc++] = "--batch";
    argv[argc++] = batch;
  }
  if (o->no_sync) argv[argc++] = "--no-sync";
  argv[argc] = NULL;
  int pid = tw_bench_spawn(argv, o->log_path);
  if (pid < 0) {
    snprintf(errbuf, errcap, "cannot start the engine %s: %s", o->exe, strerror(errno));
    return TW_EIO;
  }
  engine = (pid_t)pid;
  int pin = endpoint_port(o->in_endpoint), pfeed = endpoint_port(o->feed_endpoint);
  int ready = 0;
  for (int waited = 0; waited < LAT_READY_MS && !ready; waited += 50) {
    int status;
    if (waitpid(engine, &status, WNOHANG) == engine) {
      engine = -1;
      snprintf(errbuf, errcap, "the engine exited at start (see %s)", o->log_path);
      goto fail;
    }
    ready = (pin < 0 || tcp_reachable(pin)) && (pfeed < 0 || tcp_reachable(pfeed));
    if (!ready) sleep_ms(50);
  }
  if (!ready) {
    snprintf(errbuf, errcap, "the engine did not listen within %d ms (see %s)", LAT_READY_MS,
             o->log_path);
    goto fail;
  }
  rc = TW_EZMQ;
  ctx = zmq_ctx_new();
  if (ctx == NULL) goto fail;
  push = zmq_socket(ctx, ZMQ_PUSH);
  r.sub = zmq_socket(ctx, ZMQ_SUB);
  int hwm = 100000, zero = 0, linger = 2000;
  if (push == NULL || r.sub == NULL || zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
      zmq_setsockopt(r.sub, ZMQ_RCVHWM, &zero, sizeof zero) != 0 ||
      zmq_setsockopt(r.sub, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
      zmq_setsockopt(r.sub, ZMQ_SUBSCRIBE, "", 0) != 0 ||
      zmq_connect(r.sub, o->feed_endpoint) != 0 || zmq_connect(push, o->in_endpoint) != 0) {
    snprintf(errbuf, errcap, "ZeroMQ: %s", zmq_strerror(zmq_errno()));
    goto fail;
  }
  sleep_ms(300); /* both connections up and the subscription at the engine's PUB */
  r.t0_ns = mono_ns() + 10000000;
  atomic_store(&r.last_send_ns, r.t0_ns);
  if (pthread_create(&th, NULL, receiver, &r) != 0) {
    rc = TW_ENOMEM;
    goto fail;
  }
  thread_started = 1;
  int64_t lag_max = 0;
  for (uint64_t i = 0; i < want; i++) {
    int64_t due = r.t0_ns + (int64_t)((double)i * r.period_ns);
    int64_t now = mono_ns();
    if (due - now > LAT_SPIN_NS) {
      struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
      }
      now = mono_ns();
    }
    if (now - due > lag_max) lag_max = now - due;
    tw_record_t rec;
    tw_bench_input_record(o->in, (size_t)i, &rec);
    /* Counted as sent before the send, so an alert racing back finds its event in range. */
    atomic_store(&r.sent, i + 1);
    if (zmq_send(push, rec.data, rec.len_bytes, 0) < 0) {
      snprintf(errbuf, errcap, "send: %s", zmq_strerror(zmq_errno()));
      atomic_store(&r.sent, i);
      break;
    }
    atomic_store(&r.last_send_ns, mono_ns());
  }
  out->sent = atomic_load(&r.sent);
  double span_s = (double)(atomic_load(&r.last_send_ns) - r.t0_ns) / 1e9;
  out->achieved_per_s = span_s > 0 ? (double)out->sent / span_s : 0;
  out->sender_lag_max_ms = (double)lag_max / 1e6;
  atomic_store(&r.sender_done, 1);
  pthread_join(th, NULL);
  thread_started = 0;
  rc = errbuf[0] != '\0' ? TW_EZMQ : 0;
fail:
  if (thread_started) {
    atomic_store(&r.sender_done, 1);
    pthread_join(th, NULL);
  }
  if (push != NULL) zmq_close(push);
  if (r.sub != NULL) zmq_close(r.sub);
  if (ctx != NULL) zmq_ctx_term(ctx);
  /* The figures are taken by then: an engine slow to stop (a backlog after an overload) or
   * failing at exit is reported, and does not void them. */
  if (engine > 0 && !stop_engine(engine))
    fprintf(stderr,
            "tutorwatch bench: warning: the engine did not stop cleanly within %d s (see %s)\n",
            LAT_STOP_S, o->log_path);
  return rc;
}
