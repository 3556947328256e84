/*
 * memory.c: resident memory and LMDB bytes per active institution.
 *
 * The stream is generated in this process (tw_gen_run) into a msgpack file; the engine is the
 * real `tutorwatch run` in a grandchild process (see tw_bench_peak_rss_main), so its peak resident
 * set holds nothing of the benchmark's own buffers. A baseline run over one institution and one day
 * gives the fixed cost (code, rule pack, LMDB map, read buffers); what is above it is per
 * institution. The LMDB figures are read from the state the run leaves, read-only: pages in use in
 * the file, and the pages of each named database, so aggregates and cooldowns (the state proper)
 * are told apart from the dedup ids and the alert journal.
 *
 * Bounds: one child at a time; the generator's own bounds (tw_gen.h) bound the stream.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tw_bench.h"
#include "tw_error.h"
#include "tw_gen.h"

/* Bytes of the pages of one named database; 0 when it does not exist. */
static uint64_t db_bytes(MDB_txn *txn, const char *name, unsigned psize) {
  MDB_dbi dbi;
  MDB_stat st;
  if (mdb_dbi_open(txn, name, 0, &dbi) != 0) return 0;
  if (mdb_stat(txn, dbi, &st) != 0) return 0;
  return (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * psize;
}

static int read_lmdb(const char *dir, tw_bench_memory_t *out) {
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  int rc = TW_ESTATE;
  if (mdb_env_create(&env) != 0) return TW_ESTATE;
  if (mdb_env_set_maxdbs(env, 16) != 0) goto fail;
  if (mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0600) != 0) goto fail;
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0) goto fail;
  if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0) goto fail;
  out->lmdb_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
  out->state_bytes = db_bytes(txn, "agg", st.ms_psize) + db_bytes(txn, "cool", st.ms_psize);
  /* "dedup" is 0 for states written since the ids are indexed in memory (the database is gone) */
  out->dedup_bytes = db_bytes(txn, "dedup", st.ms_psize) + db_bytes(txn, "dedup_ts", st.ms_psize);
  out->journal_bytes = db_bytes(txn, "journal", st.ms_psize);
  rc = 0;
fail:
  if (txn != NULL) mdb_txn_abort(txn);
  mdb_env_close(env);
  return rc;
}

/* Generate, run, measure. *rss_bytes is the child's peak RSS; *events the events generated. */
static int one_run(const char *exe, const char *rules_path, uint32_t institutions, uint32_t days,
                   uint64_t seed, const char *work_dir, int keep_state_for, tw_bench_memory_t *m,
                   uint64_t *rss_bytes, char *errbuf, size_t errcap) {
  char events[4200], state[4200], log[4200], dl[4200];
  snprintf(events, sizeof events, "%s/memory-%u.msgpack", work_dir, institutions);
  snprintf(state, sizeof state, "%s/memory-%u.state", work_dir, institutions);
  snprintf(log, sizeof log, "%s/memory-%u.log", work_dir, institutions);
  snprintf(dl, sizeof dl, "%s/memory-%u.dead-letter.jsonl", work_dir, institutions);
  tw_gen_opts_t go;
  tw_gen_opts_default(&go);
  go.institutions = institutions;
  go.days = days;
  go.seed = seed;
  go.format = TW_GEN_MSGPACK;
  tw_gen_stats_t gs;
  FILE *f = fopen(events, "wb");
  if (f == NULL) {
    snprintf(errbuf, errcap, "cannot create %s: %s", events, strerror(errno));
    return TW_EIO;
  }
  int rc = tw_gen_run(&go, f, NULL, &gs);
  if (fclose(f) != 0 && rc == 0) rc = TW_EIO;
  if (rc != 0) {
    snprintf(errbuf, errcap, "generating %s: %s", events, tw_strerror(rc));
    goto done;
  }
  tw_bench_rm_rf(state);
  /* The engine is started by a helper (`exe bench --peak-rss-to FILE -- exe run ...`), a fresh
   * small process that forks and waits for it: a child's peak RSS (ru_maxrss) also counts the
   * memory of the process it was spawned from before its exec, which here would be this bench. */
  char peak_path[4200];
  snprintf(peak_path, sizeof peak_path, "%s/memory-%u.peak", work_dir, institutions);
  char *argv[] = {(char *)exe,
                  "bench",
                  "--peak-rss-to",
                  peak_path,
                  "--",
                  (char *)exe,
                  "run",
                  "--rules",
                  (char *)rules_path,
                  "--input",
                  events,
                  "--state",
                  state,
                  "--no-sync",
                  "--alerts",
                  "/dev/null",
                  "--dead-letter",
                  dl,
                  NULL};
  double t0 = tw_bench_now_s();
  int pid = tw_bench_spawn(argv, log);
  if (pid < 0) {
    rc = TW_EIO;
    snprintf(errbuf, errcap, "cannot start %s: %s", exe, strerror(errno));
    goto done;
  }
  int status = 0;
  pid_t w;
  while ((w = waitpid((pid_t)pid, &status, 0)) < 0 && errno == EINTR) {
  }
  double secs = tw_bench_now_s() - t0;
  unsigned long long peak_kb = 0;
  FILE *pf = fopen(peak_path, "r");
  int got = pf != NULL && fscanf(pf, "%llu", &peak_kb) == 1;
  if (pf != NULL) fclose(pf);
  unlink(peak_path);
  if (w != (pid_t)pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !got) {
    rc = TW_EIO;
    snprintf(errbuf, errcap, "the engine failed on %u institutions (see %s)", institutions, log);
    goto done;
  }
  *rss_bytes = (uint64_t)peak_kb * 1024u;
  if (keep_state_for) {
    m->events = gs.events;
    m->seconds = secs;
    if ((rc = read_lmdb(state, m)) != 0) {
      snprintf(errbuf, errcap, "cannot read the LMDB state in %s", state);
      goto done;
    }
  }
  rc = 0;
  unlink(log);
  unlink(dl);
done:
  unlink(events);
  tw_bench_rm_rf(state);
  return rc;
}

int tw_bench_memory(const char *exe, const char *rules_path, uint32_t institutions, uint32_t days,
                    uint64_t seed, const char *work_dir, tw_bench_memory_t *out, char *errbuf,
                    size_t errcap) {
  errbuf[0] = '\0';
  if (institutions == 0 || days == 0) return TW_EINVAL;
  uint64_t base = out->rss_base_bytes;
  memset(out, 0, sizeof *out);
  out->institutions = institutions;
  out->days = days;
  int rc;
  if (base == 0 &&
      (rc = one_run(exe, rules_path, 1, 1, seed, work_dir, 0, out, &base, errbuf, errcap)) != 0)
    return rc;
  out->rss_base_bytes = base;
  return one_run(exe, rules_path, institutions, days, seed, work_dir, 1, out, &out->rss_bytes,
                 errbuf, errcap);
}

int tw_bench_peak_rss_main(const char *out_path, char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0) return 70;
  if (pid == 0) {
    execv(argv[0], argv);
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  pid_t w;
  while ((w = wait4(pid, &status, 0, &ru)) < 0 && errno == EINTR) {
  }
  if (w != pid) return 70;
  FILE *f = fopen(out_path, "w");
  if (f == NULL) return 70;
  int ok = fprintf(f, "%llu\n", (unsigned long long)ru.ru_maxrss) > 0; /* Linux: KiB */
  if (fclose(f) != 0 || !ok) return 70;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 70;
}
