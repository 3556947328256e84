/*
 * stages.c: the throughput stages of `tutorwatch bench`: decode only, the engine in this process
 * (1 pipeline or N shards, any sync mode), and the engine fed over ZeroMQ by a separate sender
 * process; plus the small process and file helpers the other bench files share.
 *
 * Every stage reads the same records from one in-memory copy of the stream (tw_bench_input_t),
 * so file reading is not measured except by the ZeroMQ stage's sender, which reads its file as
 * `tutorwatch send` always does. Work per stage is one pass over the records (decode stages
 * repeat passes up to a time budget; they keep no state, so a second pass measures the same).
 */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tw_bench.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_shards.h"
#include "tw_sink.h"

extern char **environ;

double tw_bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double tw_bench_cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int tw_bench_free_tcp_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return TW_EIO;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t alen = sizeof a;
  int port = TW_EIO;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int tw_bench_rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : TW_EIO;
  return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : TW_EIO;
}

int tw_bench_spawn(char *const argv[], const char *log_path) {
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa) != 0) return TW_EIO;
  int rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0 && log_path != NULL) {
    rc = posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    errno = rc;
    return TW_EIO;
  }
  return (int)pid;
}

/* ---- input ---------------------------------------------------------------------------------- */

void tw_bench_input_free(tw_bench_input_t *in) {
  if (in == NULL) return;
  free(in->data);
  free(in->offsets);
  memset(in, 0, sizeof *in);
}

static int push_offset(tw_bench_input_t *in, size_t *cap, size_t off) {
  if (in->n + 1 >= *cap) {
    size_t ncap = *cap ? *cap * 2 : 4096;
    size_t *o = realloc(in->offsets, ncap * sizeof *o);
    if (o == NULL) return TW_ENOMEM;
    in->offsets = o;
    *cap = ncap;
  }
  in->offsets[in->n] = off;
  return 0;
}

int tw_bench_input_load(const char *path, tw_format_t format, size_t max_bytes,
                        tw_bench_input_t *in) {
  memset(in, 0, sizeof *in);
  if (format == TW_FORMAT_AUTO) return TW_EINVAL;
  in->format = format;
  int rc = TW_EIO;
  size_t cap = 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return TW_EIO;
  struct stat st;
  if (fstat(fileno(f), &st) != 0) goto fail;
  if ((uint64_t)st.st_size > max_bytes) {
    rc = TW_ETOOBIG;
    goto fail;
  }
  in->len_bytes = (size_t)st.st_size;
  rc = TW_ENOMEM;
  in->data = malloc(in->len_bytes + 1);
  if (in->data == NULL) goto fail;
  rc = TW_EIO;
  if (in->len_bytes > 0 && fread(in->data, 1, in->len_bytes, f) != in->len_bytes) goto fail;
  in->data[in->len_bytes] = '\0';
  size_t pos = 0;
  while (pos < in->len_bytes) {
    size_t len;
    if (format == TW_FORMAT_JSONL) {
      const char *nl = memchr(in->data + pos, '\n', in->len_bytes - pos);
      len = nl ? (size_t)(nl - (in->data + pos)) : in->len_bytes - pos;
      if (len == 0) { /* an empty line is not a record */
        pos++;
        continue;
      }
    } else {
      tw_decode_error_t derr;
      rc = tw_msgpack_frame(in->data + pos, in->len_bytes - pos, &len, &derr);
      if (rc != 0) {
        rc = TW_EPARSE;
        goto fail;
      }
    }
    if ((rc = push_offset(in, &cap, pos)) != 0) goto fail;
    in->n++;
    pos += len + (format == TW_FORMAT_JSONL ? 1 : 0);
  }
  /* The closing boundary: the end of the last record. */
  if ((rc = push_offset(in, &cap, in->len_bytes)) != 0) goto fail;
  fclose(f);
  return 0;
fail : {
  int e = errno;
  fclose(f);
  tw_bench_input_free(in);
  errno = e;
}
  return rc;
}

void tw_bench_input_record(const tw_bench_input_t *in, size_t i, tw_record_t *rec) {
  size_t start = in->offsets[i], end = in->offsets[i + 1];
  size_t len = end - start;
  /* A JSONL record ends before its newline (and a CR before it); empty lines between records
   * belong to no record. */
  if (in->format == TW_FORMAT_JSONL) {
    const char *nl = memchr(in->data + start, '\n', len);
    if (nl != NULL) len = (size_t)(nl - (in->data + start));
    if (len > 0 && in->data[start + len - 1] == '\r') len--;
  }
  memset(rec, 0, sizeof *rec);
  rec->data = in->data + start;
  rec->len_bytes = len;
  rec->full_len_bytes = len;
  rec->format = in->format;
  rec->origin = "bench";
  rec->offset_bytes = start;
  rec->line = (uint64_t)i + 1;
}

/* ---- decode only ---------------------------------------------------------------------------- */

int tw_bench_decode(const tw_schema_t *schema, const tw_bench_input_t *in, double min_seconds,
                    tw_bench_stage_t *out) {
  tw_event_t ev;
  memset(&ev, 0, sizeof ev);
  if (tw_event_init(&ev) != 0) return TW_ENOMEM;
  tw_decode_error_t err;
  uint64_t events = 0, ok = 0;
  double t0 = tw_bench_now_s(), t1, c0 = tw_bench_cpu_s();
  do {
    for (size_t i = 0; i < in->n; i++) {
      tw_record_t rec;
      tw_bench_input_record(in, i, &rec);
      int rc = in->format == TW_FORMAT_MSGPACK
                   ? tw_decode_msgpack(schema, rec.data, rec.len_bytes, &ev, &err)
                   : tw_decode_json(schema, rec.data, rec.len_bytes, &ev, &err);
      if (rc == 0) ok++;
    }
    events += in->n;
    t1 = tw_bench_now_s();
  } while (t1 - t0 < min_seconds && in->n > 0);
  tw_event_fini(&ev);
  out->events = events;
  out->accepted = ok;
  out->alerts = 0;
  out->seconds = t1 - t0;
  out->cpu_seconds = tw_bench_cpu_s() - c0;
  out->events_per_s = out->seconds > 0 ? (double)events / out->seconds : 0;
  return 0;
}

/* ---- the engine in this process -------------------------------------------------------------- */

/* Outputs: the dead-letter file beside the state, and the alerts file (if any). */
static int open_outputs(tw_outputs_t *o, const tw_pipeline_opts_t *opts, const char *alerts_path,
                        char *errbuf, size_t errcap) {
  if (mkdir(opts->state_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(errbuf, errcap, "cannot create %s: %s", opts->state_dir, strerror(errno));
    return TW_EIO;
  }
  int rc = tw_outputs_open(o, opts->dead_letter_path, opts->no_sync, errbuf, errcap);
  if (rc != 0) return rc;
  if (alerts_path != NULL) {
    tw_sink_t *sink = NULL;
    rc = tw_sink_find("jsonl")->open(alerts_path, &sink);
    if (rc == 0 && (rc = tw_outputs_add_sink(o, sink)) != 0) sink->vt->close(sink);
    if (rc != 0) snprintf(errbuf, errcap, "cannot open %s: %s", alerts_path, tw_strerror(rc));
  }
  return rc;
}

static void fill_stage(tw_bench_stage_t *out, const tw_pipeline_stats_t *st, double secs,
                       double cpu_secs) {
  out->cpu_seconds = cpu_secs;
  out->events = st->read;
  out->accepted = st->accepted;
  out->alerts = st->alerts;
  out->seconds = secs;
  out->events_per_s = secs > 0 ? (double)st->read / secs : 0;
}

int tw_bench_engine(const tw_bench_input_t *in, const tw_pipeline_opts_t *opts, int shards,
                    const char *alerts_path, tw_bench_stage_t *out, char *errbuf, size_t errcap) {
  tw_outputs_t o;
  memset(&o, 0, sizeof o);
  tw_pipeline_opts_t po = *opts;
  tw_pipeline_t *p = NULL;
  tw_shards_t *sh = NULL;
  tw_pipeline_stats_t st;
  errbuf[0] = '\0';
  int rc = open_outputs(&o, opts, alerts_path, errbuf, errcap);
  if (rc != 0) goto fail;
  po.shared_outputs = &o;
  rc = shards > 1 ? tw_shards_open(&po, shards, &o, &sh, errbuf, errcap)
                  : tw_pipeline_open(&po, &p, errbuf, errcap);
  if (rc != 0) goto fail;
  double t0 = tw_bench_now_s(), c0 = tw_bench_cpu_s();
  for (size_t i = 0; i < in->n && rc == 0; i++) {
    tw_record_t rec;
    tw_bench_input_record(in, i, &rec);
    rc = sh ? tw_shards_record(sh, &rec) : tw_pipeline_record(p, &rec);
  }
  if (rc == 0) {
    if (sh) {
      rc = tw_shards_finish(sh);
    } else if ((rc = tw_pipeline_flush(p)) == 0) {
      rc = tw_pipeline_commit(p);
    }
  }
  double secs = tw_bench_now_s() - t0, cpu = tw_bench_cpu_s() - c0;
  if (rc != 0) {
    snprintf(errbuf, errcap, "engine stopped: %s", tw_strerror(rc));
    goto fail;
  }
  if (sh)
    tw_shards_stats(sh, &st);
  else
    tw_pipeline_stats(p, &st);
  fill_stage(out, &st, secs, cpu);
fail:;
  int crc = sh ? tw_shards_close(sh) : tw_pipeline_close(p);
  int orc = tw_outputs_close(&o);
  if (rc == 0 && crc != 0) {
    rc = crc;
    snprintf(errbuf, errcap, "closing the engine: %s", tw_strerror(rc));
  }
  if (rc == 0 && orc != 0) {
    rc = orc;
    snprintf(errbuf, errcap, "closing the outputs: %s", tw_strerror(rc));
  }
  return rc;
}

/* ---- the engine over ZeroMQ, fed by a separate process --------------------------------------- */

/* The sender has exited: 1 and *ok set when it has (reaped), 0 while it runs. */
static int sender_done(pid_t pid, int *ok) {
  int status;
  pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == 0) return 0;
  *ok = r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return 1;
}

int tw_bench_engine_zmq(const char *exe, const char *input_path, tw_format_t format,
                        uint64_t expected_events, const char *endpoint,
                        const tw_pipeline_opts_t *opts, const char *log_path, int timeout_ms,
                        tw_bench_stage_t *out, char *errbuf, size_t errcap) {
  tw_outputs_t o;
  memset(&o, 0, sizeof o);
  tw_pipeline_opts_t po = *opts;
  tw_pipeline_t *p = NULL;
  tw_source_t *src = NULL;
  pid_t sender = -1;
  int sender_ok = 0, sender_reaped = 0;
  tw_source_opts_t so;
  memset(&so, 0, sizeof so);
  so.format = format;
  errbuf[0] = '\0';
  int rc = open_outputs(&o, opts, NULL, errbuf, errcap);
  if (rc != 0) goto fail;
  po.shared_outputs = &o;
  if ((rc = tw_pipeline_open(&po, &p, errbuf, errcap)) != 0) goto fail;
  if ((rc = tw_source_find("zmq-pull")->open(endpoint, &so, &src)) != 0) {
    snprintf(errbuf, errcap, "cannot bind %s: %s", endpoint, tw_strerror(rc));
    goto fail;
  }
  char fmt_arg[16];
  snprintf(fmt_arg, sizeof fmt_arg, "%s", format == TW_FORMAT_MSGPACK ? "msgpack" : "jsonl");
  char *argv[] = {(char *)exe, "send",         "--connect", (char *)endpoint,   "--format",
                  fmt_arg,     "--timeout-ms", "60000",     (char *)input_path, NULL};
  rc = tw_bench_spawn(argv, log_path);
  if (rc < 0) {
    snprintf(errbuf, errcap, "cannot start the sender %s: %s", exe, strerror(errno));
    goto fail;
  }
  sender = (pid_t)rc;
  rc = 0;
  tw_pipeline_stats_t st;
  double t0 = 0, c0 = 0, last = tw_bench_now_s();
  int fd = src->vt->fd(src);
  for (;;) {
    int n = src->vt->poll(src, 4096, tw_pipeline_record, p);
    if (n < 0) {
      rc = n;
      snprintf(errbuf, errcap, "engine stopped: %s", tw_strerror(rc));
      goto fail;
    }
    double now = tw_bench_now_s();
    if (n > 0) {
      if (t0 == 0) {
        t0 = now;
        c0 = tw_bench_cpu_s();
      }
      last = now;
      tw_pipeline_stats(p, &st);
      if (st.read >= expected_events) break;
      continue;
    }
    if (!sender_reaped && sender_done(sender, &sender_ok)) {
      sender_reaped = 1;
      last = now; /* what it sent may still be in flight: allow the timeout from here */
    }
    if (sender_reaped && !sender_ok) {
      rc = TW_EIO;
      snprintf(errbuf, errcap, "the sender failed (see %s)", log_path ? log_path : "stderr");
      goto fail;
    }
    if ((now - last) * 1000.0 > timeout_ms) {
      rc = TW_EIO;
      tw_pipeline_stats(p, &st);
      snprintf(errbuf, errcap, "%llu of %llu events arrived, then none for %d ms",
               (unsigned long long)st.read, (unsigned long long)expected_events, timeout_ms);
      goto fail;
    }
    /* ZMQ_FD is edge-triggered: the poll above drained it, so the next edge means new data. */
    struct pollfd pfd = {fd, POLLIN, 0};
    (void)poll(&pfd, 1, 5);
  }
  if ((rc = tw_pipeline_flush(p)) == 0) rc = tw_pipeline_commit(p);
  double secs = tw_bench_now_s() - t0, cpu = tw_bench_cpu_s() - c0;
  if (rc != 0) {
    snprintf(errbuf, errcap, "engine stopped: %s", tw_strerror(rc));
    goto fail;
  }
  tw_pipeline_stats(p, &st);
  fill_stage(out, &st, secs, cpu);
fail:
  if (sender > 0 && !sender_reaped) {
    if (rc != 0) kill(sender, SIGTERM);
    int status;
    while (waitpid(sender, &status, 0) < 0 && errno == EINTR) {
    }
  }
  int crc = tw_pipeline_close(p);
  if (src != NULL) src->vt->close(src);
  int orc = tw_outputs_close(&o);
  if (rc == 0 && (crc != 0 || orc != 0)) {
    rc = crc != 0 ? crc : orc;
    snprintf(errbuf, errcap, "closing the engine: %s", tw_strerror(rc));
  }
  return rc;
}
