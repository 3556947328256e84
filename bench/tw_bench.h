/*
 * tw_bench.h: the benchmark harness behind `tutorwatch bench` (issue 8).
 *
 * It measures, on one generated stream, how many events per second each stage of the engine
 * sustains (decode only, rules with unsynced state, the durable engine on 1 and N shards, the
 * engine fed over ZeroMQ tcp loopback by a separate sender process), the latency from the
 * intended send time of an event to its alert leaving the regulator feed at fixed offered rates,
 * and the resident memory and LMDB bytes per active institution. docs and figures:
 * bench/README.md, bench/RESULTS.md.
 *
 * Invariants: every stage sees the same records (bytes loaded once into memory), every stateful
 * stage starts from an empty state directory of its own, and throughput is timed from the first
 * record offered to the end of the final commit (opening and closing excluded). Latency is
 * measured from the intended send time (coordinated omission accounted for: a sender that falls
 * behind its schedule adds its delay to the latency instead of hiding it).
 *
 * Bounds: an input is loaded whole into memory (the caller chooses its size); a histogram is a
 * fixed 59 KiB array; a latency run sends at most the events loaded, and waits at most
 * TW_BENCH_DRAIN_MS for the last alerts. Child processes (sender, engine) are always reaped.
 *
 * Thread rules: functions keep no global mutable state; tw_bench_latency starts two threads of
 * its own and joins them before it returns.
 */
#ifndef TW_BENCH_H
#define TW_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "tw_pipeline.h"
#include "tw_schema.h"
#include "tw_source.h"

/* ---- log-bucket histogram (HdrHistogram-style) --------------------------------------------- */

/*
 * Values (nanoseconds, or any unsigned 64-bit quantity) below 2·S are counted exactly; above,
 * each power of two is split into S = 2^TW_HIST_SUB_BITS sub-buckets, so every bucket's width is
 * at most 1/S = 0.78% of its values: any percentile is reported within 0.78% of the truth (as
 * the bucket's highest value, never above the exact maximum). The whole 64-bit range fits.
 */
#define TW_HIST_SUB_BITS 7
#define TW_HIST_SUB_COUNT (1u << TW_HIST_SUB_BITS)
#define TW_HIST_BUCKETS ((64u - TW_HIST_SUB_BITS + 1u) * TW_HIST_SUB_COUNT) /* 7424 */

typedef struct tw_hist {
  uint64_t count; /* values recorded */
  uint64_t min;   /* exact smallest value (UINT64_MAX when empty) */
  uint64_t max;   /* exact largest value (0 when empty) */
  double sum;     /* for the mean */
  uint64_t counts[TW_HIST_BUCKETS];
} tw_hist_t;

/* tw_hist_init: empty the histogram. */
void tw_hist_init(tw_hist_t *h);

/* tw_hist_record: count one value. O(1), no allocation. */
void tw_hist_record(tw_hist_t *h, uint64_t value);

/* tw_hist_merge: add every count of src into dst. */
void tw_hist_merge(tw_hist_t *dst, const tw_hist_t *src);

/* tw_hist_bucket_of: the bucket index (0..TW_HIST_BUCKETS-1) that counts value. */
size_t tw_hist_bucket_of(uint64_t value);

/* tw_hist_bucket_low / tw_hist_bucket_high: the smallest and largest value counted by bucket b
 * (b < TW_HIST_BUCKETS). */
uint64_t tw_hist_bucket_low(size_t b);
uint64_t tw_hist_bucket_high(size_t b);

/*
 * tw_hist_percentile: the value at percentile p (0 < p ≤ 100): the highest value of the bucket
 * holding the ⌈p/100 · count⌉-th smallest value, capped at the exact maximum (so p = 100 gives
 * the maximum). 0 for an empty histogram.
 */
uint64_t tw_hist_percentile(const tw_hist_t *h, double p);

/* ---- input: one stream loaded into memory, split into records ------------------------------- */

typedef struct tw_bench_input {
  char *data; /* owned: the whole file */
  size_t len_bytes;
  size_t *offsets; /* owned: n + 1 record boundaries (record i is data[offsets[i], offsets[i+1])
                      less its newline for JSONL) */
  size_t n;        /* records */
  tw_format_t format;
} tw_bench_input_t;

/*
 * tw_bench_input_load: read the file at path whole and split it into records of format
 * (TW_FORMAT_JSONL: lines, empty ones skipped; TW_FORMAT_MSGPACK: objects framed by
 * tw_msgpack_frame). max_bytes bounds the file (a larger one is refused). On success *in owns its
 * buffers (tw_bench_input_free). Returns 0, TW_EIO (cannot open or read; errno says why),
 * TW_ETOOBIG (file over max_bytes), TW_EPARSE (msgpack that does not frame), TW_ENOMEM,
 * TW_EINVAL (format AUTO).
 */
int tw_bench_input_load(const char *path, tw_format_t format, size_t max_bytes,
                        tw_bench_input_t *in);

/* tw_bench_input_free: free what tw_bench_input_load allocated; a zeroed struct is accepted. */
void tw_bench_input_free(tw_bench_input_t *in);

/* tw_bench_input_record: record i (< in->n) as a tw_record_t borrowing in's bytes. */
void tw_bench_input_record(const tw_bench_input_t *in, size_t i, tw_record_t *rec);

/* ---- throughput stages ---------------------------------------------------------------------- */

typedef struct tw_bench_stage {
  char key[32];        /* stable id: "decode_msgpack", "engine_1", ... */
  char name[96];       /* what the table shows: "decode only, msgpack" */
  uint64_t events;     /* records offered (over all passes for decode stages) */
  uint64_t accepted;   /* events decoded and valid (decode) or accepted by the engine */
  uint64_t alerts;     /* alerts raised (0 for decode stages) */
  double seconds;      /* wall time measured */
  double cpu_seconds;  /* CPU time (user + system) of this process over the same span, all its
                          threads: below `seconds` the stage waits (fsync, the network) */
  double events_per_s; /* events / seconds */
  double ratio;        /* events_per_s / the decode-only msgpack rate (set by the caller) */
} tw_bench_stage_t;

/*
 * tw_bench_decode: decode every record of in (tw_decode_msgpack or tw_decode_json by its
 * format) into one reused event, pass after pass until min_seconds have elapsed (at least one
 * pass), and fill *out (key, name, events, accepted, seconds, events_per_s). Nothing else is
 * done with the event: this is the ceiling every other stage is compared with.
 * Returns 0 or TW_ENOMEM (the event arena).
 */
int tw_bench_decode(const tw_schema_t *schema, const tw_bench_input_t *in, double min_seconds,
                    tw_bench_stage_t *out);

/*
 * tw_bench_engine: run every record of in through the engine in this process: one pipeline
 * (shards ≤ 1) or tw_shards with `shards` threads, opened with *opts (its state_dir must be an
 * empty or absent directory, created here; its shared_outputs is set here), then flush and
 * commit. Alerts go to a JSON Lines file at alerts_path (NULL: none). Timed from the first
 * record to the end of the final commit. Fills *out except key, name and ratio.
 * Returns 0, or the engine's error with a message in errbuf (open failure: TW_EINVAL, TW_EIO,
 * TW_ESTATE, TW_ENOMEM, rule errors; processing: TW_ESTATE, TW_ENOMEM, TW_EIO).
 */
int tw_bench_engine(const tw_bench_input_t *in, const tw_pipeline_opts_t *opts, int shards,
                    const char *alerts_path, tw_bench_stage_t *out, char *errbuf, size_t errcap);

/*
 * tw_bench_engine_zmq: the engine (one pipeline, opened with *opts as tw_bench_engine does)
 * reads a ZeroMQ PULL socket bound at endpoint, while a separate process, `exe send --connect
 * endpoint --format F input_path`, pushes the expected_events records of input_path. Timed from
 * the first record received to the end of the final commit. Waits at most timeout_ms for a
 * record when none comes (the sender died or stalled), then fails. The sender's stderr goes to
 * log_path. Fills *out except key, name and ratio.
 * Returns 0; TW_EZMQ (bind failed); TW_EIO (the sender could not start, or exited with an error
 * before everything arrived, or the timeout passed); the engine's errors as tw_bench_engine.
 */
int tw_bench_engine_zmq(const char *exe, const char *input_path, tw_format_t format,
                        uint64_t expected_events, const char *endpoint,
                        const tw_pipeline_opts_t *opts, const char *log_path, int timeout_ms,
                        tw_bench_stage_t *out, char *errbuf, size_t errcap);

/* ---- latency at a fixed offered rate -------------------------------------------------------- */

#define TW_BENCH_DRAIN_MS 3000 /* wait for the last alerts after the last send, at most */

typedef struct tw_bench_latency_opts {
  const char *exe;           /* the tutorwatch executable (the engine runs as `exe run --listen`) */
  const char *rules_path;    /* rule file with a rule that fires often (see tw_bench_probe_rules) */
  const char *schema_path;   /* the schema for it */
  const char *state_dir;     /* the engine's state: absent or empty */
  const char *log_path;      /* the engine's stderr */
  const char *in_endpoint;   /* engine PULL, e.g. tcp://127.0.0.1:7611 */
  const char *feed_endpoint; /* engine PUB feed */
  const tw_bench_input_t *in; /* records to send, in order; event ids "g<seed>-<index>" */
  double rate_per_s;          /* offered rate */
  double seconds;             /* how long to offer it (capped by the records available) */
  unsigned batch_events;      /* the engine's --batch (group commit every N records); 0: its
                                 default when serving (TW_PIPELINE_SERVE_BATCH) */
  int no_sync;                /* 1: the engine runs with --no-sync (commits are not flushed to the
                                 disk: not durable), to tell the disk's share of the latency */
} tw_bench_latency_opts_t;

typedef struct tw_bench_latency {
  double offered_per_s;     /* the rate asked for */
  double achieved_per_s;    /* events sent / (time of the last send - start) */
  uint64_t sent;            /* events sent */
  uint64_t alerts;          /* alerts received from the feed and matched to a sent event */
  uint64_t unmatched;       /* alerts whose event id was not recognised */
  double sender_lag_max_ms; /* the furthest the sender fell behind its schedule */
  tw_hist_t hist;           /* latency, ns: receive time - intended send time of the event */
} tw_bench_latency_t;

/*
 * tw_bench_latency: start the engine (`exe run --listen in_endpoint --feed feed_endpoint
 * --allowed-lateness 0s [--batch N] [--no-sync]`, durable state unless no_sync), subscribe to its
 * feed, push the first rate·seconds records at the offered rate (event i is due at start + i/rate;
 * late ones are sent at once, their delay counted), and record, for each alert, the time it left
 * the feed minus the intended send time of the event that triggered it (its `event_ids`). Then stop
 * the engine (SIGTERM) and reap it. *out must be allocated by the caller (it holds the 59 KiB
 * histogram). Returns 0; TW_EIO (the engine did not start or did not listen within 10 s, or died;
 * see its log); TW_EZMQ; TW_ENOMEM; TW_EINVAL (rate ≤ 0, no records).
 */
int tw_bench_latency(const tw_bench_latency_opts_t *opts, tw_bench_latency_t *out, char *errbuf,
                     size_t errcap);

/*
 * tw_bench_probe_rules: write to out_path the rule file at rules_path with one more rule
 * first in its top-level block-style `rules:` list, `bench_probe` (info, no cooldown), which
 * fires on every prepaid payment (about 12% of a generated stream), so a latency run has
 * thousands of alerts to time instead of the few the default pack raises; latency counts only
 * its alerts. Returns 0, TW_EIO (errno says why), TW_ETOOBIG (a rule file over
 * TW_RULES_MAX_FILE_BYTES), TW_EINVAL (no `rules:` line at column 0 to put it under).
 */
int tw_bench_probe_rules(const char *rules_path, const char *out_path);

/* ---- memory per active institution ---------------------------------------------------------- */

typedef struct tw_bench_memory {
  uint32_t institutions; /* institutions generated (all are active) */
  uint32_t days;
  uint64_t events;
  uint64_t rss_bytes;      /* peak resident set of `tutorwatch run` over that stream */
  uint64_t rss_base_bytes; /* peak resident set of the same run over one institution, one day */
  uint64_t lmdb_bytes;     /* pages in use in the state's LMDB file (last page + 1) × page size */
  uint64_t state_bytes;    /* pages of the `agg` and `cool` databases (aggregates, cooldowns) */
  uint64_t dedup_bytes;    /* pages of `dedup` and `dedup_ts` (event ids within the horizon) */
  uint64_t journal_bytes;  /* pages of `journal` (alerts) */
  double seconds;          /* the run's wall time */
} tw_bench_memory_t;

/*
 * tw_bench_memory: generate `institutions` institutions over `days` days (seed) as msgpack into
 * work_dir, run `exe run --rules rules_path --input … --no-sync` on it as a child process (peak
 * RSS from wait4), and read the LMDB page counts of the state it leaves. The baseline run (one
 * institution, one day) is done when out->rss_base_bytes is 0 on entry, and reused otherwise.
 * Files are removed afterwards. Returns 0; TW_EIO (a file, a child that failed: see
 * work_dir/memory-N.log); TW_ESTATE (the state cannot be read); TW_ENOMEM; TW_EINVAL.
 */
int tw_bench_memory(const char *exe, const char *rules_path, uint32_t institutions, uint32_t days,
                    uint64_t seed, const char *work_dir, tw_bench_memory_t *out, char *errbuf,
                    size_t errcap);

/* ---- the report: table, JSON, plots ------------------------------------------------------- */

#define TW_BENCH_MAX_STAGES 8
#define TW_BENCH_MAX_RATES 8
#define TW_BENCH_MAX_MEMORY 4

typedef struct tw_bench_report {
  /* machine and conditions */
  char cpu_model[128];
  int cpus;
  char kernel[256];
  char build[96];        /* build type and sanitizers: figures from a sanitizer build are slow */
  double load_before[3]; /* /proc/loadavg at the start: other work on the machine */
  char started_utc[32];
  int quick;
  /* the stream */
  uint32_t institutions, days;
  uint64_t seed;
  uint64_t events;
  uint64_t bytes_msgpack, bytes_jsonl;
  int shards;
  unsigned latency_batch;  /* the engine's --batch in latency runs; 0: its default
                              (TW_PIPELINE_SERVE_BATCH) */
  int latency_no_sync;     /* the latency runs' engine had --no-sync (not durable) */
  char state_tmpfs[256];   /* where the unsynced stage kept its state */
  char state_durable[256]; /* where the durable stages kept theirs */
  /* results */
  tw_bench_stage_t stages[TW_BENCH_MAX_STAGES];
  size_t n_stages;
  tw_bench_latency_t *latency; /* n_latency entries, owned by the caller */
  size_t n_latency;
  tw_bench_memory_t memory[TW_BENCH_MAX_MEMORY];
  size_t n_memory;
  double total_seconds;
} tw_bench_report_t;

/* tw_bench_report_machine: fill the machine fields (CPU model and count from /proc/cpuinfo and
 * sysconf, kernel from uname, load from /proc/loadavg, build from the compiler's macros, the
 * UTC start time). Missing files leave "?" and zeros. */
void tw_bench_report_machine(tw_bench_report_t *r);

/* tw_bench_print_table: the report as aligned text tables (stages with events/s and the ratio to
 * decode-only msgpack; latency percentiles in ms per offered rate; memory per institution). */
void tw_bench_print_table(const tw_bench_report_t *r, FILE *out);

/* tw_bench_write_json: the report as one JSON document (jansson) at path ("-": stdout), with
 * each latency histogram's non-empty buckets as [highest value ns, count] pairs.
 * Returns 0, TW_EIO (errno says why), TW_ENOMEM. */
int tw_bench_write_json(const tw_bench_report_t *r, const char *path);

/*
 * tw_bench_plot: write into dir (created if absent) throughput.dat, latency.dat and bench.gp, and
 * run `gnuplot bench.gp` there, which draws throughput.png (events/s by stage) and latency.png
 * (p50, p99, p99.9 and max by offered rate, log scale). Returns 0; TW_EIO with a message in
 * errbuf (a file cannot be written, gnuplot is not installed or failed: see dir/gnuplot.log).
 */
int tw_bench_plot(const tw_bench_report_t *r, const char *dir, char *errbuf, size_t errcap);

/*
 * tw_bench_peak_rss_main: the helper behind `tutorwatch bench --peak-rss-to FILE -- CMD ARGS...`:
 * fork, exec CMD in the child, wait for it, write its peak resident set in KiB (wait4's
 * ru_maxrss) and a newline to FILE, and return its exit status (70 when it cannot be started
 * or FILE cannot be written; 128 + signal when it was killed). Linux counts in a child's
 * ru_maxrss the memory of the process it was created from until its exec, so the peak of a
 * program is only its own when its parent is small: this helper, freshly started, is.
 */
int tw_bench_peak_rss_main(const char *out_path, char *const argv[]);

/* ---- helpers for the command ---------------------------------------------------------------- */

/* tw_bench_now_s: the monotonic clock in seconds. */
double tw_bench_now_s(void);

/* tw_bench_cpu_s: CPU time (user + system) of this process so far, all threads, in seconds. */
double tw_bench_cpu_s(void);

/*
 * tw_bench_free_tcp_port: a TCP port on 127.0.0.1 free at the time of the call (bound to port 0
 * and released), or TW_EIO. Another process could take it before it is used; rare on a test box.
 */
int tw_bench_free_tcp_port(void);

/* tw_bench_rm_rf: remove a directory tree (no symlink is followed); missing is not an error.
 * Returns 0 or TW_EIO. */
int tw_bench_rm_rf(const char *path);

/*
 * tw_bench_spawn: start argv[0] with argv, stdin from /dev/null, stdout and stderr appended to
 * log_path (NULL: inherited). Returns the child's pid (> 0) or TW_EIO (errno says why).
 */
int tw_bench_spawn(char *const argv[], const char *log_path);

#endif
