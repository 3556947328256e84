/*
 * cmd_bench.c: `tutorwatch bench`: throughput by stage, latency at offered rates, memory per
 * institution, in one run (bench/tw_bench.h; bench/README.md for the method).
 *
 * Order of work: generate the stream (msgpack and JSON Lines, same seed, same events) into a work
 * directory, load both into memory, then run the stages one after the other, then the latency
 * runs (the engine as a child process), then the memory runs (the engine as a child process over
 * freshly generated streams of 10k and 100k institutions). Nothing runs concurrently except what
 * a stage is about (shards, the sender process, the feed subscriber). The work directory is
 * removed at the end unless --keep. Progress goes to stderr, the table to stdout.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "tw_bench.h"
#include "tw_cli.h"
#include "tw_error.h"
#include "tw_gen.h"
#include "tw_schema.h"

#define BENCH_MAX_INPUT_BYTES ((size_t)4 << 30) /* one loaded stream: 4 GiB */
#define TMPFS_MAGIC_NUMBER 0x01021994

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch bench [--quick] [options]\n"
      "\n"
      "Measure tutorwatch on this machine, in one run: events/s of each stage (decode only,\n"
      "rules with unsynced state, the durable engine on 1 and N shards, ZeroMQ tcp loopback from\n"
      "a separate sender process), each also as a ratio to decode-only msgpack; send-to-alert\n"
      "latency percentiles at fixed offered rates over ZeroMQ (from the intended send time, so\n"
      "coordinated omission is counted); peak RSS and LMDB bytes per active institution.\n"
      "\n"
      "options:\n"
      "  --quick               a smaller run, under two minutes on 2 vCPU: 400 institutions x\n"
      "                        60 days, rates 10000,50000 for 2 s, memory over 2 days\n"
      "  --institutions N      institutions in the throughput stream (default 2000)\n"
      "  --days D              days in the throughput stream (default 120: 1.1 M events)\n"
      "  --seed S              generator seed (default 7)\n"
      "  --shards N            shards of the N-shard stage (default: CPUs, at least 2)\n"
      "  --rates LIST          offered rates for latency, events/s (default 10000,50000,100000)\n"
      "  --rate-seconds S      seconds per offered rate (default 10; capped by the stream)\n"
      "  --latency-batch N     the engine's --batch in latency runs (default: its own, 10000)\n"
      "  --latency-no-sync     latency runs with the engine's --no-sync: commits are not\n"
      "                        flushed to the disk (not durable); compared with a run\n"
      "                        without it, tells the disk's share of send-to-alert latency\n"
      "  --mem-institutions L  institution counts for memory (default 10000,100000)\n"
      "  --mem-days D          days generated for memory runs (default 8: full 7-day windows)\n"
      "  --rules FILE          rule file (default: the shipped rules/packs/default.yaml)\n"
      "  --skip LIST           leave out some of: throughput, latency, memory\n"
      "  --work DIR            work directory (default: a new one in /tmp, removed at the end)\n"
      "  --keep                keep the work directory (streams, states, logs)\n"
      "  --json FILE           write the results as JSON to FILE ('-': stdout)\n"
      "  --plot DIR            write throughput.png and latency.png into DIR (needs gnuplot)\n"
      "  -h, --help            show this help\n"
      "\n"
      "Run it on a quiet machine: other work changes the figures (the load average before the\n"
      "run is printed with them). A sanitizer or -O0 build is much slower; the table says which\n"
      "build ran. Exit status: 0 done, 1 a stage or an output failed, 2 usage error, 70 internal\n"
      "error.\n"
      "\n"
      "internal: `tutorwatch bench --peak-rss-to FILE -- CMD ARGS...` runs CMD and writes its "
      "peak\n"
      "RSS in KiB to FILE (the memory stage measures the engine through it).\n");
}

typedef struct bench_opts {
  uint32_t institutions, days, mem_days;
  uint64_t seed;
  int shards, quick, keep;
  double rates[TW_BENCH_MAX_RATES];
  size_t n_rates;
  double rate_seconds;
  unsigned latency_batch;
  int latency_no_sync;
  uint32_t mem_inst[TW_BENCH_MAX_MEMORY];
  size_t n_mem;
  int skip_throughput, skip_latency, skip_memory;
  const char *rules, *work, *json, *plot;
} bench_opts_t;

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* "10000,50000" into up to cap values in [lo, hi]; the count, or -1. */
static int parse_list(const char *s, double lo, double hi, double *out, size_t cap) {
  size_t n = 0;
  const char *p = s;
  while (*p != '\0') {
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno != 0 || !(v >= lo && v <= hi) || n == cap) return -1;
    out[n++] = v;
    if (*end == ',') {
      end++;
      if (*end == '\0') return -1;
    } else if (*end != '\0') {
      return -1;
    }
    p = end;
  }
  return n > 0 ? (int)n : -1;
}

static int parse_skip(const char *s, bench_opts_t *o) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t != NULL;
       t = strtok_r(NULL, ",", &save)) {
    if (strcmp(t, "throughput") == 0)
      o->skip_throughput = 1;
    else if (strcmp(t, "latency") == 0)
      o->skip_latency = 1;
    else if (strcmp(t, "memory") == 0)
      o->skip_memory = 1;
    else
      return -1;
  }
  return 0;
}

static const char *fs_kind(const char *path) {
  struct statfs sf;
  if (statfs(path, &sf) != 0) return "?";
  return (unsigned long)sf.f_type == TMPFS_MAGIC_NUMBER ? "tmpfs" : "disk";
}

static int gen_file(const bench_opts_t *o, tw_gen_format_t fmt, const char *path) {
  tw_gen_opts_t go;
  tw_gen_opts_default(&go);
  go.institutions = o->institutions;
  go.days = o->days;
  go.seed = o->seed;
  go.format = fmt;
  FILE *f = fopen(path, "wb");
  if (f == NULL) return TW_EIO;
  static char buf[1 << 20];
  setvbuf(f, buf, _IOFBF, sizeof buf);
  int rc = tw_gen_run(&go, f, NULL, NULL);
  if (fclose(f) != 0 && rc == 0) rc = TW_EIO;
  return rc;
}

static void stage_names(tw_bench_stage_t *s, const char *key, const char *name) {
  snprintf(s->key, sizeof s->key, "%s", key);
  snprintf(s->name, sizeof s->name, "%s", name);
}

static void report_stage(const tw_bench_stage_t *s) {
  fprintf(stderr, "tutorwatch bench: %-44s %12.0f events/s (%llu events, %.2f s, %llu alerts)\n",
          s->name, s->events_per_s, (unsigned long long)s->events, s->seconds,
          (unsigned long long)s->alerts);
}

/* The throughput stages, in table order. */
static int run_throughput(const bench_opts_t *o, tw_bench_report_t *r, const char *exe,
                          const char *work, const char *shm_dir, const tw_schema_t *schema,
                          const char *schema_path, const tw_bench_input_t *mp,
                          const tw_bench_input_t *js, const char *mp_path) {
  char err[4096], state[4400], alerts[4400], dl[4400], log[4400];
  double min_s = o->quick ? 0.3 : 1.0;
  int rc;
  tw_bench_stage_t *s = &r->stages[r->n_stages];
  stage_names(s, "decode_msgpack", "decode only, msgpack");
  if ((rc = tw_bench_decode(schema, mp, min_s, s)) != 0) return rc;
  report_stage(s);
  double base = s->events_per_s;
  r->n_stages++;
  s = &r->stages[r->n_stages];
  stage_names(s, "decode_jsonl", "decode only, JSON Lines");
  if ((rc = tw_bench_decode(schema, js, min_s, s)) != 0) return rc;
  report_stage(s);
  r->n_stages++;

  tw_pipeline_opts_t po;
  memset(&po, 0, sizeof po);
  po.rules_path = o->rules;
  po.schema_path = schema_path;
  po.allowed_lateness_ms = po.max_future_skew_ms = po.dedup_horizon_ms = -1;
  po.dead_letter_path = dl;
  snprintf(dl, sizeof dl, "%s/dead-letter.jsonl", work);

  struct {
    const char *key;
    char name[96];
    const char *dir;
    int sync, shards, one_commit, zmq;
  } plan[] = {
      {"rules_unsynced", "", shm_dir, 0, 1, 1, 0},
      {"engine_1", "engine, durable group commit, 1 shard", work, 1, 1, 0, 0},
      {"engine_n", "", work, 1, o->shards, 0, 0},
      {"engine_zmq", "engine over ZeroMQ tcp, separate sender", work, 1, 1, 0, 1},
  };
  snprintf(plan[0].name, sizeof plan[0].name, "rules, state unsynced on %s, 1 commit",
           fs_kind(shm_dir));
  snprintf(plan[2].name, sizeof plan[2].name, "engine, durable group commit, %d shards", o->shards);
  for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
    s = &r->stages[r->n_stages];
    stage_names(s, plan[i].key, plan[i].name);
    snprintf(state, sizeof state, "%s/state-%s", plan[i].dir, plan[i].key);
    snprintf(alerts, sizeof alerts, "%s/alerts-%s.jsonl", work, plan[i].key);
    tw_bench_rm_rf(state);
    po.state_dir = state;
    po.no_sync = !plan[i].sync;
    po.batch_events = plan[i].one_commit ? mp->n + 1 : 0;
    if (plan[i].zmq) {
      int port = tw_bench_free_tcp_port();
      char ep[64];
      snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
      snprintf(log, sizeof log, "%s/sender.log", work);
      rc = port < 0 ? TW_EIO
                    : tw_bench_engine_zmq(exe, mp_path, TW_FORMAT_MSGPACK, mp->n, ep, &po, log,
                                          30000, s, err, sizeof err);
    } else {
      rc = tw_bench_engine(mp, &po, plan[i].shards, alerts, s, err, sizeof err);
    }
    if (rc != 0) {
      fprintf(stderr, "tutorwatch bench: %s: %s\n", plan[i].name, err);
      return rc;
    }
    if (!o->keep) tw_bench_rm_rf(state);
    report_stage(s);
    r->n_stages++;
  }
  for (size_t i = 0; i < r->n_stages; i++)
    r->stages[i].ratio = base > 0 ? r->stages[i].events_per_s / base : 0;
  return 0;
}

static int run_latency(const bench_opts_t *o, tw_bench_report_t *r, const char *exe,
                       const char *work, const char *schema_path, const tw_bench_input_t *mp) {
  char probe[4400], err[4096];
  snprintf(probe, sizeof probe, "%s/probe-rules.yaml", work);
  int rc = tw_bench_probe_rules(o->rules, probe);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch bench: cannot write %s: %s\n", probe, tw_strerror(rc));
    return rc;
  }
  for (size_t i = 0; i < o->n_rates; i++) {
    char state[4400], log[4400], in_ep[64], feed_ep[64];
    int p1 = tw_bench_free_tcp_port(), p2 = tw_bench_free_tcp_port();
    if (p1 < 0 || p2 < 0 || p1 == p2) {
      fprintf(stderr, "tutorwatch bench: no free TCP port on 127.0.0.1\n");
      return TW_EIO;
    }
    snprintf(in_ep, sizeof in_ep, "tcp://127.0.0.1:%d", p1);
    snprintf(feed_ep, sizeof feed_ep, "tcp://127.0.0.1:%d", p2);
    snprintf(state, sizeof state, "%s/state-latency-%.0f", work, o->rates[i]);
    snprintf(log, sizeof log, "%s/engine-latency-%.0f.log", work, o->rates[i]);
    tw_bench_rm_rf(state);
    tw_bench_latency_opts_t lo = {
        exe,         probe,           schema_path,      state,
        log,         in_ep,           feed_ep,          mp,
        o->rates[i], o->rate_seconds, o->latency_batch, o->latency_no_sync};
    tw_bench_latency_t *l = &r->latency[r->n_latency];
    rc = tw_bench_latency(&lo, l, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "tutorwatch bench: latency at %.0f events/s: %s\n", o->rates[i], err);
      return rc;
    }
    if (!o->keep) tw_bench_rm_rf(state);
    fprintf(stderr,
            "tutorwatch bench: latency at %.0f events/s offered (%.0f achieved, %llu events, %llu "
            "alerts%s): p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
            l->offered_per_s, l->achieved_per_s, (unsigned long long)l->sent,
            (unsigned long long)l->alerts, o->latency_no_sync ? ", --no-sync: not durable" : "",
            (double)tw_hist_percentile(&l->hist, 50) / 1e6,
            (double)tw_hist_percentile(&l->hist, 99) / 1e6,
            (double)tw_hist_percentile(&l->hist, 99.9) / 1e6, (double)l->hist.max / 1e6);
    r->n_latency++;
  }
  return 0;
}

static int run_memory(const bench_opts_t *o, tw_bench_report_t *r, const char *exe,
                      const char *work) {
  char err[4096];
  uint64_t base = 0;
  for (size_t i = 0; i < o->n_mem; i++) {
    tw_bench_memory_t *m = &r->memory[r->n_memory];
    m->rss_base_bytes = base;
    int rc = tw_bench_memory(exe, o->rules, o->mem_inst[i], o->mem_days, o->seed, work, m, err,
                             sizeof err);
    if (rc != 0) {
      fprintf(stderr, "tutorwatch bench: memory at %u institutions: %s\n", o->mem_inst[i], err);
      return rc;
    }
    base = m->rss_base_bytes;
    fprintf(stderr,
            "tutorwatch bench: memory at %u institutions (%llu events): peak RSS %.1f MiB, LMDB "
            "%.1f MiB (state %.1f MiB)\n",
            m->institutions, (unsigned long long)m->events, (double)m->rss_bytes / 1048576.0,
            (double)m->lmdb_bytes / 1048576.0, (double)m->state_bytes / 1048576.0);
    r->n_memory++;
  }
  return 0;
}

int tw_cmd_bench(int argc, char **argv) {
  /* Internal: the memory stage's helper (tw_bench_peak_rss_main). */
  if (argc >= 5 && strcmp(argv[1], "--peak-rss-to") == 0 && strcmp(argv[3], "--") == 0)
    return tw_bench_peak_rss_main(argv[2], argv + 4);
  static const struct option longopts[] = {{"quick", no_argument, NULL, 'q'},
                                           {"institutions", required_argument, NULL, 'i'},
                                           {"days", required_argument, NULL, 'd'},
                                           {"seed", required_argument, NULL, 's'},
                                           {"shards", required_argument, NULL, 'N'},
                                           {"rates", required_argument, NULL, 'R'},
                                           {"rate-seconds", required_argument, NULL, 'T'},
                                           {"latency-batch", required_argument, NULL, 'B'},
                                           {"latency-no-sync", no_argument, NULL, 'S'},
                                           {"mem-institutions", required_argument, NULL, 'M'},
                                           {"mem-days", required_argument, NULL, 'D'},
                                           {"rules", required_argument, NULL, 'r'},
                                           {"skip", required_argument, NULL, 'k'},
                                           {"work", required_argument, NULL, 'w'},
                                           {"keep", no_argument, NULL, 'K'},
                                           {"json", required_argument, NULL, 'j'},
                                           {"plot", required_argument, NULL, 'p'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  bench_opts_t o;
  memset(&o, 0, sizeof o);
  o.seed = 7;
  int set_inst = 0, set_days = 0, set_rates = 0, set_secs = 0, set_memdays = 0, set_mem = 0;
  uint64_t v;
  double list[TW_BENCH_MAX_RATES];
  int c, n, li = 0;
  optind = 1;
  while ((li = -1, c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
    switch (c) {
      case 'q':
        o.quick = 1;
        break;
      case 'i':
        if (parse_u64(optarg, 1, TW_GEN_MAX_INSTITUTIONS, &v) != 0) goto bad;
        o.institutions = (uint32_t)v;
        set_inst = 1;
        break;
      case 'd':
      case 'D':
        if (parse_u64(optarg, 1, TW_GEN_MAX_DAYS, &v) != 0) goto bad;
        if (c == 'd') {
          o.days = (uint32_t)v;
          set_days = 1;
        } else {
          o.mem_days = (uint32_t)v;
          set_memdays = 1;
        }
        break;
      case 's':
        if (parse_u64(optarg, 0, UINT64_MAX, &v) != 0) goto bad;
        o.seed = v;
        break;
      case 'N':
        if (parse_u64(optarg, 2, 64, &v) != 0) goto bad;
        o.shards = (int)v;
        break;
      case 'R':
        if ((n = parse_list(optarg, 1, 10e6, o.rates, TW_BENCH_MAX_RATES)) < 0) goto bad;
        o.n_rates = (size_t)n;
        set_rates = 1;
        break;
      case 'T':
        if ((n = parse_list(optarg, 0.1, 3600, list, 1)) != 1) goto bad;
        o.rate_seconds = list[0];
        set_secs = 1;
        break;
      case 'B':
        if (parse_u64(optarg, 1, 10000000, &v) != 0) goto bad;
        o.latency_batch = (unsigned)v;
        break;
      case 'S':
        o.latency_no_sync = 1;
        break;
      case 'M':
        if ((n = parse_list(optarg, 1, TW_GEN_MAX_INSTITUTIONS, list, TW_BENCH_MAX_MEMORY)) < 0)
          goto bad;
        for (int k = 0; k < n; k++) o.mem_inst[k] = (uint32_t)list[k];
        o.n_mem = (size_t)n;
        set_mem = 1;
        break;
      case 'r':
        o.rules = optarg;
        break;
      case 'k':
        if (parse_skip(optarg, &o) != 0) goto bad;
        break;
      case 'w':
        o.work = optarg;
        break;
      case 'K':
        o.keep = 1;
        break;
      case 'j':
        o.json = optarg;
        break;
      case 'p':
        o.plot = optarg;
        break;
      case 'h':
        usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch bench --help' lists the options\n");
        return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "tutorwatch bench: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!set_inst) o.institutions = o.quick ? 400 : 2000;
  if (!set_days) o.days = o.quick ? 60 : 120;
  if (!set_memdays) o.mem_days = o.quick ? 2 : 8;
  if (!set_secs) o.rate_seconds = o.quick ? 2 : 10;
  if (!set_rates) {
    static const double full[] = {10000, 50000, 100000}, quick[] = {10000, 50000};
    o.n_rates = o.quick ? 2 : 3;
    memcpy(o.rates, o.quick ? quick : full, o.n_rates * sizeof o.rates[0]);
  }
  if (!set_mem) {
    o.mem_inst[0] = 10000;
    o.mem_inst[1] = 100000;
    o.n_mem = 2;
  }
  if (o.shards == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o.shards = cpus > 2 ? (int)(cpus > 64 ? 64 : cpus) : 2;
  }
  if (o.rules == NULL) o.rules = TW_SOURCE_DIR "/rules/packs/default.yaml";

  /* Everything below cleans up through `done`. */
  int status = 0, rc;
  char exe[PATH_MAX], work_buf[] = "/tmp/tutorwatch-bench-XXXXXX",
                      shm_buf[] = "/dev/shm/tutorwatch-bench-XXXXXX";
  char mp_path[4400], js_path[4400], schema_path[4096], err[4096];
  const char *work = o.work, *shm_dir = NULL;
  int made_work = 0, made_shm = 0;
  tw_bench_input_t mp, js;
  memset(&mp, 0, sizeof mp);
  memset(&js, 0, sizeof js);
  tw_schema_t *schema = NULL;
  tw_bench_report_t *r = calloc(1, sizeof *r);
  tw_bench_latency_t *lat = calloc(o.n_rates, sizeof *lat);
  if (r == NULL || lat == NULL) {
    status = 70;
    goto done;
  }
  r->latency = lat;
  ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (el <= 0) {
    fprintf(stderr, "tutorwatch bench: cannot find its own executable: %s\n", strerror(errno));
    status = 70;
    goto done;
  }
  exe[el] = '\0';
  if (access(o.rules, R_OK) != 0) {
    fprintf(stderr, "tutorwatch bench: cannot read the rule file %s: %s\n", o.rules,
            strerror(errno));
    status = 1;
    goto done;
  }
  if (work == NULL) {
    if (mkdtemp(work_buf) == NULL) {
      fprintf(stderr, "tutorwatch bench: cannot create %s: %s\n", work_buf, strerror(errno));
      status = 1;
      goto done;
    }
    work = work_buf;
    made_work = 1;
  } else if (mkdir(work, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "tutorwatch bench: cannot create %s: %s\n", work, strerror(errno));
    status = 1;
    goto done;
  }
  struct stat shm_st;
  if (stat("/dev/shm", &shm_st) == 0 && S_ISDIR(shm_st.st_mode) && mkdtemp(shm_buf) != NULL) {
    shm_dir = shm_buf;
    made_shm = 1;
  } else {
    shm_dir = work;
  }
  if (tw_schema_path_for_rules(o.rules, schema_path, sizeof schema_path) != 0) {
    fprintf(stderr, "tutorwatch bench: no schema for %s\n", o.rules);
    status = 1;
    goto done;
  }
  tw_schema_error_t serr;
  if (tw_schema_load(schema_path, &schema, &serr) != 0) {
    fprintf(stderr, "tutorwatch bench: cannot load the schema %s\n", schema_path);
    status = 1;
    goto done;
  }

  tw_bench_report_machine(r);
  r->quick = o.quick;
  r->institutions = o.institutions;
  r->days = o.days;
  r->seed = o.seed;
  r->shards = o.shards;
  r->latency_batch = o.latency_batch;
  r->latency_no_sync = o.latency_no_sync;
  snprintf(r->state_tmpfs, sizeof r->state_tmpfs, "%s (%s)", shm_dir, fs_kind(shm_dir));
  snprintf(r->state_durable, sizeof r->state_durable, "%s (%s)", work, fs_kind(work));
  if (r->build[0] != 'o' || strstr(r->build, "ASan") != NULL)
    fprintf(stderr,
            "tutorwatch bench: this is a %s build: its figures are far below a release "
            "build's\n",
            r->build);
  double t_start = tw_bench_now_s();

  if (!o.skip_throughput || !o.skip_latency) {
    snprintf(mp_path, sizeof mp_path, "%s/events.msgpack", work);
    snprintf(js_path, sizeof js_path, "%s/events.jsonl", work);
    fprintf(stderr, "tutorwatch bench: generating %u institutions x %u days (seed %llu) in %s\n",
            o.institutions, o.days, (unsigned long long)o.seed, work);
    if ((rc = gen_file(&o, TW_GEN_MSGPACK, mp_path)) != 0 ||
        (rc = gen_file(&o, TW_GEN_JSONL, js_path)) != 0) {
      fprintf(stderr, "tutorwatch bench: cannot generate the stream in %s: %s\n", work,
              tw_strerror(rc));
      status = rc == TW_ENOMEM ? 70 : 1;
      goto done;
    }
    if ((rc = tw_bench_input_load(mp_path, TW_FORMAT_MSGPACK, BENCH_MAX_INPUT_BYTES, &mp)) != 0 ||
        (rc = tw_bench_input_load(js_path, TW_FORMAT_JSONL, BENCH_MAX_INPUT_BYTES, &js)) != 0) {
      fprintf(stderr, "tutorwatch bench: cannot load the stream: %s\n", tw_strerror(rc));
      status = rc == TW_ENOMEM ? 70 : 1;
      goto done;
    }
    if (mp.n != js.n) {
      fprintf(stderr, "tutorwatch bench: the msgpack and JSON streams differ (%zu, %zu events)\n",
              mp.n, js.n);
      status = 70;
      goto done;
    }
    r->events = mp.n;
    r->bytes_msgpack = mp.len_bytes;
    r->bytes_jsonl = js.len_bytes;
  }
  if (!o.skip_throughput && (rc = run_throughput(&o, r, exe, work, shm_dir, schema, schema_path,
                                                 &mp, &js, mp_path)) != 0) {
    status = rc == TW_ENOMEM ? 70 : 1;
    goto report;
  }
  if (!o.skip_latency && (rc = run_latency(&o, r, exe, work, schema_path, &mp)) != 0) {
    status = rc == TW_ENOMEM ? 70 : 1;
    goto report;
  }
  if (!o.skip_memory && (rc = run_memory(&o, r, exe, work)) != 0) {
    status = rc == TW_ENOMEM ? 70 : 1;
    goto report;
  }
report:
  r->total_seconds = tw_bench_now_s() - t_start;
  fprintf(stdout, "\n");
  tw_bench_print_table(r, stdout);
  fflush(stdout);
  if (o.json != NULL && (rc = tw_bench_write_json(r, o.json)) != 0) {
    fprintf(stderr, "tutorwatch bench: cannot write %s: %s\n", o.json, strerror(errno));
    if (status == 0) status = 1;
  }
  if (o.plot != NULL && (rc = tw_bench_plot(r, o.plot, err, sizeof err)) != 0) {
    fprintf(stderr, "tutorwatch bench: --plot: %s\n", err);
    if (status == 0) status = 1;
  }
done:
  tw_bench_input_free(&mp);
  tw_bench_input_free(&js);
  tw_schema_free(schema);
  free(lat);
  free(r);
  if (made_shm) tw_bench_rm_rf(shm_buf);
  if (o.keep) {
    if (work != NULL) fprintf(stderr, "tutorwatch bench: work directory kept: %s\n", work);
  } else if (made_work) {
    tw_bench_rm_rf(work_buf);
  } else if (work != NULL) {
    /* A --work directory given by the user: the streams go (they are large); the alerts, logs
     * and dead-letter file stay for a look. */
    static const char *const files[] = {"events.msgpack", "events.jsonl"};
    char path[4400];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
      snprintf(path, sizeof path, "%s/%s", work, files[i]);
      unlink(path);
    }
  }
  return status;
bad:
  fprintf(stderr,
          "tutorwatch bench: bad value '%s' for --%s\n'tutorwatch bench --help' lists the "
          "options\n",
          optarg, li >= 0 ? longopts[li].name : "?");
  return 2;
}
