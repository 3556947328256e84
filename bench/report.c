/*
 * report.c: what `tutorwatch bench` prints and writes: the machine, aligned tables, one JSON
 * document, and gnuplot charts.
 *
 * The JSON keys are a contract for scripts (tests/e2e/test_bench.sh checks its shape; the peers
 * script reads the engine's rate from it); the table is for people. Charts are drawn by gnuplot
 * from .dat files written beside the script, so a user can restyle them and run it again.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tw_bench.h"
#include "tw_error.h"
#include "tw_pipeline.h"

static void first_line_value(const char *path, const char *key, char *out, size_t cap) {
  FILE *f = fopen(path, "r");
  char line[512];
  snprintf(out, cap, "?");
  if (f == NULL) return;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, key, strlen(key)) != 0) continue;
    const char *c = strchr(line, ':');
    if (c == NULL) continue;
    c++;
    while (*c == ' ' || *c == '\t') c++;
    snprintf(out, cap, "%s", c);
    out[strcspn(out, "\n")] = '\0';
    break;
  }
  fclose(f);
}

void tw_bench_report_machine(tw_bench_report_t *r) {
  first_line_value("/proc/cpuinfo", "model name", r->cpu_model, sizeof r->cpu_model);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  r->cpus = n > 0 ? (int)n : 0;
  struct utsname u;
  if (uname(&u) == 0)
    snprintf(r->kernel, sizeof r->kernel, "%s %s %s", u.sysname, u.release, u.machine);
  else
    snprintf(r->kernel, sizeof r->kernel, "?");
  const char *san = "";
#if defined(__SANITIZE_ADDRESS__)
  san = " +ASan";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  san = " +ASan";
#endif
#endif
#ifdef __OPTIMIZE__
  const char *opt = "optimised";
#else
  const char *opt = "unoptimised (-O0)";
#endif
  snprintf(r->build, sizeof r->build, "%s%s, %s", opt, san,
#ifdef __clang__
           "clang"
#else
           "gcc"
#endif
  );
  r->load_before[0] = r->load_before[1] = r->load_before[2] = 0;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f != NULL) {
    if (fscanf(f, "%lf %lf %lf", &r->load_before[0], &r->load_before[1], &r->load_before[2]) != 3)
      r->load_before[0] = r->load_before[1] = r->load_before[2] = 0;
    fclose(f);
  }
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(r->started_utc, sizeof r->started_utc, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* 1234567.8 → "1,234,568" */
static const char *grouped(double v, char *buf, size_t cap) {
  char raw[32];
  snprintf(raw, sizeof raw, "%.0f", v);
  size_t len = strlen(raw), o = 0;
  for (size_t i = 0; i < len && o + 2 < cap; i++) {
    if (i > 0 && raw[i - 1] != '-' && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = raw[i];
  }
  buf[o] = '\0';
  return buf;
}

static double ms(uint64_t ns) {
  return (double)ns / 1e6;
}

void tw_bench_print_table(const tw_bench_report_t *r, FILE *out) {
  char a[32], b[32], c[32];
  fprintf(out,
          "tutorwatch bench%s: %s events (%u institutions, %u days, seed %llu), %s msgpack, "
          "%s JSONL\n",
          r->quick ? " --quick" : "", grouped((double)r->events, a, sizeof a), r->institutions,
          r->days, (unsigned long long)r->seed, grouped((double)r->bytes_msgpack, b, sizeof b),
          grouped((double)r->bytes_jsonl, c, sizeof c));
  fprintf(out, "machine: %s, %d CPUs, %s; build %s; load before %.2f %.2f %.2f\n", r->cpu_model,
          r->cpus, r->kernel, r->build, r->load_before[0], r->load_before[1], r->load_before[2]);
  if (r->n_stages > 0) {
    fprintf(out, "\n%-44s %12s %9s %8s %6s %8s\n", "throughput stage", "events/s", "x decode",
            "seconds", "CPU %", "alerts");
    for (size_t i = 0; i < r->n_stages; i++) {
      const tw_bench_stage_t *s = &r->stages[i];
      fprintf(out, "%-44s %12s %9.2f %8.2f %6.0f %8llu\n", s->name,
              grouped(s->events_per_s, a, sizeof a), s->ratio, s->seconds,
              s->seconds > 0 ? 100.0 * s->cpu_seconds / s->seconds : 0.0,
              (unsigned long long)s->alerts);
    }
    fprintf(out,
            "(x decode: the stage's rate / decode-only msgpack; CPU %%: this process's CPU time / "
            "wall time, all threads; state: %s unsynced, %s durable)\n",
            r->state_tmpfs, r->state_durable);
  }
  if (r->n_latency > 0) {
    fprintf(out, "\n%-10s %10s %8s %8s %9s %9s %9s %9s %9s\n", "offered/s", "achieved/s", "events",
            "alerts", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "lag ms");
    for (size_t i = 0; i < r->n_latency; i++) {
      const tw_bench_latency_t *l = &r->latency[i];
      fprintf(out, "%-10s %10s %8llu %8llu %9.3f %9.3f %9.3f %9.3f %9.3f\n",
              grouped(l->offered_per_s, a, sizeof a), grouped(l->achieved_per_s, b, sizeof b),
              (unsigned long long)l->sent, (unsigned long long)l->alerts,
              ms(tw_hist_percentile(&l->hist, 50)), ms(tw_hist_percentile(&l->hist, 99)),
              ms(tw_hist_percentile(&l->hist, 99.9)), ms(l->hist.max), l->sender_lag_max_ms);
    }
    fprintf(out,
            "(latency: alert received from the feed - intended send time of its event; engine "
            "--batch %u%s; lag: the sender's worst delay behind schedule)\n",
            r->latency_batch ? r->latency_batch : TW_PIPELINE_SERVE_BATCH,
            r->latency_no_sync ? ", --no-sync: commits not flushed to the disk, NOT durable"
                               : ", durable commits");
  }
  if (r->n_memory > 0) {
    fprintf(out, "\n%-13s %9s %10s %12s %12s %12s %12s\n", "institutions", "events", "RSS MiB",
            "RSS B/inst", "LMDB B/inst", "state B/inst", "dedup B/inst");
    for (size_t i = 0; i < r->n_memory; i++) {
      const tw_bench_memory_t *m = &r->memory[i];
      double n = m->institutions;
      double rss_per = ((double)m->rss_bytes - (double)m->rss_base_bytes) / n;
      fprintf(out, "%-13u %9llu %10.1f %12.0f %12.0f %12.0f %12.0f\n", m->institutions,
              (unsigned long long)m->events, (double)m->rss_bytes / 1048576.0, rss_per,
              (double)m->lmdb_bytes / n, (double)m->state_bytes / n, (double)m->dedup_bytes / n);
    }
    fprintf(out,
            "(RSS B/inst: peak RSS above a one-institution run, per institution; state: "
            "aggregates and cooldowns; dedup: event ids within the 7-day horizon)\n");
  }
  fprintf(out, "\ntotal %.1f s\n", r->total_seconds);
}

static json_t *latency_json(const tw_bench_latency_t *l) {
  json_t *buckets = json_array();
  for (size_t b = 0; b < TW_HIST_BUCKETS && buckets != NULL; b++)
    if (l->hist.counts[b] > 0)
      json_array_append_new(buckets, json_pack("[I,I]", (json_int_t)tw_hist_bucket_high(b),
                                               (json_int_t)l->hist.counts[b]));
  return json_pack("{s:f,s:f,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:o}", "offered_per_s",
                   l->offered_per_s, "achieved_per_s", l->achieved_per_s, "events",
                   (json_int_t)l->sent, "alerts", (json_int_t)l->alerts, "unmatched",
                   (json_int_t)l->unmatched, "p50_ms", ms(tw_hist_percentile(&l->hist, 50)),
                   "p99_ms", ms(tw_hist_percentile(&l->hist, 99)), "p999_ms",
                   ms(tw_hist_percentile(&l->hist, 99.9)), "max_ms", ms(l->hist.max), "mean_ms",
                   l->hist.count ? l->hist.sum / (double)l->hist.count / 1e6 : 0.0,
                   "sender_lag_max_ms", l->sender_lag_max_ms, "histogram_ns", buckets);
}

int tw_bench_write_json(const tw_bench_report_t *r, const char *path) {
  json_t *stages = json_array(), *lat = json_array(), *mem = json_array();
  int rc = TW_ENOMEM;
  json_t *root = NULL;
  if (stages == NULL || lat == NULL || mem == NULL) goto fail;
  for (size_t i = 0; i < r->n_stages; i++) {
    const tw_bench_stage_t *s = &r->stages[i];
    if (json_array_append_new(
            stages, json_pack("{s:s,s:s,s:I,s:I,s:I,s:f,s:f,s:f,s:f}", "key", s->key, "name",
                              s->name, "events", (json_int_t)s->events, "accepted",
                              (json_int_t)s->accepted, "alerts", (json_int_t)s->alerts, "seconds",
                              s->seconds, "cpu_seconds", s->cpu_seconds, "events_per_s",
                              s->events_per_s, "ratio_to_decode", s->ratio)) != 0)
      goto fail;
  }
  for (size_t i = 0; i < r->n_latency; i++)
    if (json_array_append_new(lat, latency_json(&r->latency[i])) != 0) goto fail;
  for (size_t i = 0; i < r->n_memory; i++) {
    const tw_bench_memory_t *m = &r->memory[i];
    double n = m->institutions;
    if (json_array_append_new(
            mem, json_pack(
                     "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f}", "institutions",
                     (json_int_t)m->institutions, "days", (json_int_t)m->days, "events",
                     (json_int_t)m->events, "rss_bytes", (json_int_t)m->rss_bytes, "rss_base_bytes",
                     (json_int_t)m->rss_base_bytes, "lmdb_bytes", (json_int_t)m->lmdb_bytes,
                     "state_bytes", (json_int_t)m->state_bytes, "dedup_bytes",
                     (json_int_t)m->dedup_bytes, "journal_bytes", (json_int_t)m->journal_bytes,
                     "rss_per_institution", ((double)m->rss_bytes - (double)m->rss_base_bytes) / n,
                     "lmdb_per_institution", (double)m->lmdb_bytes / n, "state_per_institution",
                     (double)m->state_bytes / n, "dedup_per_institution",
                     (double)m->dedup_bytes / n, "seconds", m->seconds)) != 0)
      goto fail;
  }
  root = json_pack(
      "{s:i,s:{s:s,s:i,s:s,s:s,s:[f,f,f],s:s},s:b,s:{s:I,s:I,s:I,s:I,s:I,s:I},s:{s:s,s:s},"
      "s:O,s:I,s:b,s:O,s:O,s:f}",
      "tutorwatch_bench", 1, "machine", "cpu", r->cpu_model, "cpus", r->cpus, "kernel", r->kernel,
      "build", r->build, "load_before", r->load_before[0], r->load_before[1], r->load_before[2],
      "started_utc", r->started_utc, "quick", r->quick, "stream", "institutions",
      (json_int_t)r->institutions, "days", (json_int_t)r->days, "seed", (json_int_t)r->seed,
      "events", (json_int_t)r->events, "bytes_msgpack", (json_int_t)r->bytes_msgpack, "bytes_jsonl",
      (json_int_t)r->bytes_jsonl, "state", "unsynced", r->state_tmpfs, "durable", r->state_durable,
      "stages", stages, "latency_batch",
      (json_int_t)(r->latency_batch ? r->latency_batch : TW_PIPELINE_SERVE_BATCH),
      "latency_no_sync", r->latency_no_sync, "latency", lat, "memory", mem, "total_seconds",
      r->total_seconds);
  if (root == NULL) goto fail;
  rc = TW_EIO;
  if (strcmp(path, "-") == 0) {
    if (json_dumpf(root, stdout, JSON_INDENT(1)) != 0 || fputc('\n', stdout) == EOF) goto fail;
  } else {
    FILE *f = fopen(path, "w");
    if (f == NULL) goto fail;
    int wr = json_dumpf(root, f, JSON_INDENT(1));
    if (fputc('\n', f) == EOF) wr = -1;
    if (fclose(f) != 0 || wr != 0) goto fail;
  }
  rc = 0;
fail:
  json_decref(root);
  json_decref(stages);
  json_decref(lat);
  json_decref(mem);
  return rc;
}

static const char kPlotScript[] =
    "# Written by `tutorwatch bench --plot`; run `gnuplot bench.gp` here to draw again.\n"
    "set terminal pngcairo size 1000,560 font 'sans,10'\n"
    "set datafile separator '\\t'\n"
    "set output 'throughput.png'\n"
    "set title 'tutorwatch: throughput by stage (events/s)'\n"
    "set style fill solid 0.7\n"
    "set boxwidth 0.6\n"
    "set grid ytics\n"
    "set yrange [0:*]\n"
    "set xtics rotate by -25 left noenhanced\n"
    "set format y '%.1s%c'\n"
    "set bmargin 10\n"
    "set rmargin 28\n"
    "plot 'throughput.dat' using 0:2:xtic(1) with boxes notitle, \\\n"
    "     '' using 0:2:(sprintf('%.2fx', $3)) with labels offset 0,1 notitle\n"
    "set output 'latency.png'\n"
    "set title 'tutorwatch: send to alert latency over ZeroMQ tcp (intended send time)'\n"
    "set style fill empty\n"
    "set xtics norotate\n"
    "set bmargin\n"
    "set rmargin\n"
    "set logscale y\n"
    "set yrange [*:*]\n"
    "set format y '%g'\n"
    "set ylabel 'ms'\n"
    "set xlabel 'offered rate, events/s'\n"
    "set key top left\n"
    "set offsets 0.25, 0.25, 0, 0\n"
    "plot 'latency.dat' using 0:2:xtic(1) with linespoints title 'p50', \\\n"
    "     '' using 0:3 with linespoints title 'p99', \\\n"
    "     '' using 0:4 with linespoints title 'p99.9', \\\n"
    "     '' using 0:5 with linespoints title 'max'\n";

static int write_text(const char *dir, const char *name, const char *text, char *errbuf,
                      size_t errcap, FILE **keep) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    snprintf(errbuf, errcap, "cannot write %s: %s", path, strerror(errno));
    return TW_EIO;
  }
  if (text != NULL) fputs(text, f);
  if (keep != NULL) {
    *keep = f;
    return 0;
  }
  if (fclose(f) != 0) {
    snprintf(errbuf, errcap, "cannot write %s: %s", path, strerror(errno));
    return TW_EIO;
  }
  return 0;
}

int tw_bench_plot(const tw_bench_report_t *r, const char *dir, char *errbuf, size_t errcap) {
  errbuf[0] = '\0';
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    snprintf(errbuf, errcap, "cannot create %s: %s", dir, strerror(errno));
    return TW_EIO;
  }
  FILE *f = NULL;
  int rc = write_text(dir, "throughput.dat", "# stage\tevents/s\tratio to decode msgpack\n", errbuf,
                      errcap, &f);
  if (rc != 0) return rc;
  for (size_t i = 0; i < r->n_stages; i++)
    fprintf(f, "%s\t%.0f\t%.3f\n", r->stages[i].name, r->stages[i].events_per_s,
            r->stages[i].ratio);
  if (fclose(f) != 0) goto io;
  if ((rc = write_text(dir, "latency.dat", "# offered/s\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\n",
                       errbuf, errcap, &f)) != 0)
    return rc;
  for (size_t i = 0; i < r->n_latency; i++) {
    const tw_hist_t *h = &r->latency[i].hist;
    /* A log scale cannot show 0: an empty run is drawn at 1 µs. */
    fprintf(f, "%.0f\t%.4f\t%.4f\t%.4f\t%.4f\n", r->latency[i].offered_per_s,
            h->count ? ms(tw_hist_percentile(h, 50)) : 0.001,
            h->count ? ms(tw_hist_percentile(h, 99)) : 0.001,
            h->count ? ms(tw_hist_percentile(h, 99.9)) : 0.001, h->count ? ms(h->max) : 0.001);
  }
  if (fclose(f) != 0) goto io;
  if ((rc = write_text(dir, "bench.gp", kPlotScript, errbuf, errcap, NULL)) != 0) return rc;
  char log[4200];
  snprintf(log, sizeof log, "%s/gnuplot.log", dir);
  /* gnuplot reads and writes relative to dir: run it from a shell that changes there. */
  char *argv[] = {"/bin/sh", "-c", "cd \"$0\" && exec gnuplot bench.gp", (char *)dir, NULL};
  int pid = tw_bench_spawn(argv, log);
  if (pid < 0) goto io;
  int status = 0;
  while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    snprintf(errbuf, errcap,
             "gnuplot failed (exit %d; is it installed? apt-get install gnuplot-nox); see %s",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, log);
    return TW_EIO;
  }
  unlink(log);
  return 0;
io:
  snprintf(errbuf, errcap, "cannot write the plot files in %s: %s", dir, strerror(errno));
  return TW_EIO;
}
