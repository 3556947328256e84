/*
 * nats_group.c: engines sharing a NATS JetStream event stream by partition leases (contract and
 * protocol in tw_nats_group.h; operation in docs/scaling.md).
 *
 * One thread: a loop that renews and balances the leases every lease/4, fetches from each owned
 * partition's consumer into its pipeline, commits and acknowledges, lets caught-up partitions'
 * watermarks move, and checkpoints. Nothing here blocks for long except NATS requests, which wait
 * at most 5 s (jsOptions.Wait); a partition whose lease could not be renewed in time is dropped
 * before anything more of it is committed, acknowledged or published.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nats_internal.h"
#include "tw_error.h"
#include "tw_nats.h"
#include "tw_nats_group.h"
#include "tw_nats_obj.h"
#include "tw_pseudo.h"

#define GROUP_FETCH_WAIT_MS 5     /* a fetch waits this long for a batch to fill */
#define GROUP_IDLE_POLL_MS 50     /* a partition read to its end is fetched from this often */
#define GROUP_IDLE_SLEEP_MS 20    /* nothing anywhere: pause before the next round of fetches */
#define GROUP_JOIN_WAIT_MS 3000   /* at most this long before the first balance */
#define GROUP_QUIET_SLEEP_MS 100  /* ... when every partition held is caught up (or none held) */
#define GROUP_COMMIT_MS 200       /* records waiting this long are committed */
#define GROUP_CAUGHT_UP_MS 1000   /* a partition with nothing to read this long is idle */
#define GROUP_PATH_MAX 4096
#define GROUP_CONSUMER_RESET_MS 3000 /* fetches failing this long: the consumer is made again */

/* A partition's lease as the renewer thread and the loop share it (group.mu). */
typedef struct lease {
  int held;             /* the renewer renews it */
  int revoked;          /* a renewal found another revision: the loop drops the partition */
  uint64_t rev;         /* the revision held */
  int64_t valid_until;  /* monotonic ms: no use of the partition after this */
  int64_t max_event_ms; /* reported in the lease value (INT64_MIN: none yet) */
  int idle;             /* reported too: nothing to read for GROUP_CAUGHT_UP_MS */
  char consumer[TW_NATS_ID_MAX + 48]; /* reported too: the consumer in use (operators, tests) */
} lease_t;

typedef struct part {
  int k;
  int owned; /* the loop's view: a pipeline and a consumer are open */
  lease_t lease;
  tw_pipeline_t *p;
  tw_nats_consumer_t *c;
  uint64_t uncommitted;   /* records since the last commit */
  int64_t last_commit_ms; /* monotonic */
  int64_t idle_since_ms;  /* monotonic; 0 = not caught up */
  int64_t swept_to_ms;    /* the stream-wide newest time its sweeps ran to */
  int64_t last_ckpt_ms;   /* monotonic */
  uint64_t ckpt_seq;      /* the sequence of its last checkpoint */
  uint64_t sink_errors;   /* the pipeline's count after the last commit */
  int64_t fetch_failing_since; /* monotonic ms of the first of consecutive failed fetches */
  int64_t last_poll_ms;        /* monotonic ms of the last fetch */
  uint64_t alerts;
} part_t;

typedef struct group {
  tw_nats_group_opts_t o;
  tw_nats_group_stats_t *st;
  char id[TW_NATS_ENGINE_ID_MAX + 1];
  char member_key[TW_NATS_ENGINE_ID_MAX + 16];
  natsConnection *nc;
  jsCtx *js;
  kvStore *leases;
  part_t *parts;
  int n_owned;
  int64_t lease_ms;
  int64_t stream_max_ms; /* newest event time any owner reported */
  int stream_idle;       /* every partition is held and its owner reported it idle */
  int64_t claim_pause_until; /* monotonic ms: after a failed take, no claims before this */
  uint64_t commit_every;     /* records per partition between commits (opts batch_events) */
  int members, rank;     /* live engines, and this one's place among them (sorted ids) */
  char *errbuf;
  size_t errcap;
  /* The renewer thread renews every held lease and the engine's key every lease/4, so a slow
   * NATS request of the loop (a consumer made while a leader is elected, a checkpoint) never lets
   * a lease lapse. mu guards parts[].lease and quit. */
  pthread_t renewer;
  int renewer_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int quit;
} group_t;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void logf_(const group_t *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const group_t *g, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "tutorwatch run [%s]: ", g->id);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

static void rm_rf(const char *dir) {
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void part_dir(const group_t *g, int k, const char *suffix, char *out, size_t cap) {
  snprintf(out, cap, "%s/partition-%d%s", g->o.pipeline.state_dir, k, suffix);
}

/* Startup steps meet a cluster still electing leaders, or several engines creating the same
 * buckets at once: a transient failure is tried again, for about STARTUP_ATTEMPTS seconds. */
#define STARTUP_ATTEMPTS 30
#define RETRY(call)                                                              \
  do {                                                                           \
    for (int attempt_ = 1;; attempt_++) {                                        \
      s = (call);                                                                \
      if (!tw__nats_transient(s) || attempt_ >= STARTUP_ATTEMPTS) break;         \
      nats_Sleep(1000);                                                          \
    }                                                                            \
  } while (0)

/* ---- the shared pseudonym key ----------------------------------------------------------------- */

/* The group's key: the one in tw-group if any; else this engine's DIR/pseudonym.key (or, without
 * one, a new random key) is offered as the group's. The local DIR/pseudonym.key must then be the
 * group's key (written when absent; a state with another key is refused). */
static int share_pseudonym_key(group_t *g) {
  char path[GROUP_PATH_MAX];
  snprintf(path, sizeof path, "%s/pseudonym.key", g->o.pipeline.state_dir);
  kvStore *kv = NULL;
  kvConfig kc;
  kvConfig_Init(&kc);
  kc.Bucket = TW_NATS_GROUP_BUCKET;
  kc.History = 1;
  kc.StorageType = js_FileStorage;
  kc.Replicas = g->o.replicas > 0 ? g->o.replicas : 1;
  natsStatus s;
  RETRY(js_KeyValue(&kv, g->js, TW_NATS_GROUP_BUCKET));
  if (s != NATS_OK) RETRY(js_CreateKeyValue(&kv, g->js, &kc));
  if (s != NATS_OK) RETRY(js_KeyValue(&kv, g->js, TW_NATS_GROUP_BUCKET)); /* made meanwhile */
  if (s != NATS_OK) {
    tw__nats_err(g->errbuf, g->errcap, "cannot open the key-value bucket " TW_NATS_GROUP_BUCKET,
                 s, 0);
    return TW_EIO;
  }
  tw_pseudo_key_t local_key, group_key, placed;
  uint8_t *local = local_key.key, *group = group_key.key;
  char hex[2 * TW_PSEUDO_KEY_BYTES + 1];
  int have_local = tw_pseudo_key_read(g->o.pipeline.state_dir, &local_key);
  if (have_local != 0 && have_local != TW_ENOENT) {
    kvStore_Destroy(kv);
    snprintf(g->errbuf, g->errcap, "cannot read the pseudonym key '%s'", path);
    return TW_EIO;
  }
  if (have_local == TW_ENOENT) randombytes_buf(local, TW_PSEUDO_KEY_BYTES); /* offered if none */
  int rc = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    kvEntry *e = NULL;
    RETRY(kvStore_Get(&e, kv, "pseudonym-key"));
    if (s == NATS_OK) {
      const char *v = kvEntry_ValueString(e);
      size_t bin_len = 0;
      int bad = v == NULL ||
                sodium_hex2bin(group, TW_PSEUDO_KEY_BYTES, v, strlen(v), NULL, &bin_len, NULL) !=
                    0 ||
                bin_len != TW_PSEUDO_KEY_BYTES;
      kvEntry_Destroy(e);
      if (bad) {
        snprintf(g->errbuf, g->errcap, "the group's pseudonym key in %s is not 64 hex digits",
                 TW_NATS_GROUP_BUCKET);
        rc = TW_EIO;
      }
      break;
    }
    if (s != NATS_NOT_FOUND || attempt == 1) {
      tw__nats_err(g->errbuf, g->errcap, "cannot read the group's pseudonym key", s, 0);
      rc = TW_EIO;
      break;
    }
    sodium_bin2hex(hex, sizeof hex, local, TW_PSEUDO_KEY_BYTES);
    uint64_t rev = 0;
    RETRY(kvStore_CreateString(&rev, kv, "pseudonym-key", hex));
    sodium_memzero(hex, sizeof hex);
    if (s == NATS_OK) {
      group_key = local_key;
      logf_(g, "this engine's pseudonym key is now the group's (bucket %s)", TW_NATS_GROUP_BUCKET);
      break;
    }
    /* Another engine offered its key first: read that one. */
  }
  kvStore_Destroy(kv);
  if (rc == 0 && have_local == TW_ENOENT) {
    /* Put the group's key in place (another process on this directory may have put one first:
     * compared below like an existing key). */
    if (tw_pseudo_key_install(g->o.pipeline.state_dir, &group_key, &placed) != 0) {
      snprintf(g->errbuf, g->errcap, "cannot write the pseudonym key '%s'", path);
      rc = TW_EIO;
    } else {
      local_key = placed;
    }
  }
  if (rc == 0 && sodium_memcmp(local, group, TW_PSEUDO_KEY_BYTES) != 0) {
    snprintf(g->errbuf, g->errcap,
             "'%s' is not the group's pseudonym key (bucket %s): this state was made by another "
             "group; use a new --state directory",
             path, TW_NATS_GROUP_BUCKET);
    rc = TW_EIO;
  }
  sodium_memzero(&local_key, sizeof local_key);
  sodium_memzero(&group_key, sizeof group_key);
  sodium_memzero(&placed, sizeof placed);
  return rc;
}

/* ---- partitions --------------------------------------------------------------------------------
 */

/* Open the pipeline of partition k on DIR/partition-K; *done receives the sequence it covers. */
static int open_pipeline(group_t *g, part_t *pt, uint64_t *done) {
  char dir[GROUP_PATH_MAX], err[1024];
  part_dir(g, pt->k, "", dir, sizeof dir);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(g->errbuf, g->errcap, "cannot create '%s': %s", dir, strerror(errno));
    return TW_EIO;
  }
  tw_pipeline_opts_t po = g->o.pipeline;
  po.state_dir = dir;
  po.pseudonym_dir = g->o.pipeline.state_dir;
  int rc = tw_pipeline_open(&po, &pt->p, err, sizeof err);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: %s", pt->k, err);
    pt->p = NULL;
    return rc;
  }
  rc = tw_pipeline_track_stream(pt->p, done);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: its stream position is unreadable: %s", pt->k,
             tw_strerror(rc));
    tw_pipeline_abandon(pt->p);
    pt->p = NULL;
  }
  return rc;
}

/* An empty directory DIR/partition-K<suffix> in out (whatever was there is removed), for a
 * checkpoint being written or restored. */
static int fresh_dir(group_t *g, int k, const char *suffix, char *out, size_t cap) {
  part_dir(g, k, suffix, out, cap);
  rm_rf(out);
  if (mkdir(out, 0700) == 0) return 0;
  snprintf(g->errbuf, g->errcap, "cannot create '%s': %s", out, strerror(errno));
  return TW_EIO;
}

/* Replace DIR/partition-K by the checkpoint. */
static int restore(group_t *g, part_t *pt) {
  char dir[GROUP_PATH_MAX], tmp[GROUP_PATH_MAX], file[GROUP_PATH_MAX + 16], name[32],
      err[1024];
  part_dir(g, pt->k, "", dir, sizeof dir);
  snprintf(name, sizeof name, "partition-%d", pt->k);
  if (fresh_dir(g, pt->k, ".restore", tmp, sizeof tmp) != 0) return TW_EIO;
  snprintf(file, sizeof file, "%s/data.mdb", tmp);
  int rc = tw_nats_obj_get(g->js, TW_NATS_CHECKPOINT_BUCKET, name, file, err, sizeof err);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: cannot restore its checkpoint: %s", pt->k, err);
    rm_rf(tmp);
    return rc;
  }
  rm_rf(dir);
  if (rename(tmp, dir) != 0) {
    snprintf(g->errbuf, g->errcap, "cannot rename '%s': %s", tmp, strerror(errno));
    return TW_EIO;
  }
  return 0;
}

/* ---- leases shared with the renewer -------------------------------------------------------- */

/* The loop may use pt (commit, acknowledge, publish, checkpoint) only while this holds. */
static int lease_ok(group_t *g, part_t *pt) {
  pthread_mutex_lock(&g->mu);
  int ok = pt->lease.held && !pt->lease.revoked && mono_ms() <= pt->lease.valid_until;
  pthread_mutex_unlock(&g->mu);
  return ok;
}

static void lease_hold(group_t *g, part_t *pt, uint64_t rev, int64_t valid_until) {
  pthread_mutex_lock(&g->mu);
  pt->lease.held = 1;
  pt->lease.revoked = 0;
  pt->lease.rev = rev;
  pt->lease.valid_until = valid_until;
  pt->lease.max_event_ms = INT64_MIN;
  pt->lease.idle = 0;
  pt->lease.consumer[0] = '\0';
  pthread_mutex_unlock(&g->mu);
}

/* The consumer in use goes into the lease value at once: the renewer is woken to write it. */
static void lease_consumer(group_t *g, part_t *pt) {
  pthread_mutex_lock(&g->mu);
  snprintf(pt->lease.consumer, sizeof pt->lease.consumer, "%s", tw_nats_consumer_name(pt->c));
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Read the lease held and stop renewing it, in one step (the renewer cannot move the revision in
 * between): for reopening a partition under the same lease (lease_hold again). */
static void lease_keep(group_t *g, part_t *pt, uint64_t *rev, int64_t *valid_until) {
  pthread_mutex_lock(&g->mu);
  *rev = pt->lease.rev;
  *valid_until = pt->lease.valid_until;
  pt->lease.held = 0;
  pt->lease.revoked = 0;
  pthread_mutex_unlock(&g->mu);
}

static char *lease_value(const group_t *g, int64_t max_event_ms, int idle, const char *consumer) {
  json_t *o = json_pack("{s:s, s:b}", "engine", g->id, "idle", idle);
  if (o != NULL && consumer != NULL && consumer[0] != '\0')
    json_object_set_new(o, "consumer", json_string(consumer));
  if (o != NULL && max_event_ms != INT64_MIN)
    json_object_set_new(o, "max_event_ms", json_integer(max_event_ms));
  char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

/* Delete partition k's lease only if it is still at revision rev (ours): a delete marker with an
 * expected last subject sequence, so a lease another engine has taken since is left alone. */
static void lease_delete(group_t *g, int k, uint64_t rev) {
  char subject[64], expect[24];
  snprintf(subject, sizeof subject, "$KV.%s.p.%d", TW_NATS_LEASE_BUCKET, k);
  snprintf(expect, sizeof expect, "%llu", (unsigned long long)rev);
  natsMsg *m = NULL;
  if (natsMsg_Create(&m, subject, NULL, NULL, 0) != NATS_OK) return;
  if (natsMsgHeader_Set(m, "KV-Operation", "DEL") == NATS_OK &&
      natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", expect) == NATS_OK) {
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    (void)js_PublishMsg(&pa, g->js, m, NULL, &jerr); /* refused: not ours any more */
    jsPubAck_Destroy(pa);
  }
  natsMsg_Destroy(m);
}

/* One pass of the renewer: the engine's key, then every held lease by compare-and-set. */
static void renew_all(group_t *g) {
  char *mine = lease_value(g, INT64_MIN, 0, NULL);
  uint64_t rev = 0;
  if (mine != NULL) (void)kvStore_PutString(&rev, g->leases, g->member_key, mine);
  free(mine);
  for (int k = 0; k < g->o.partitions; k++) {
    part_t *pt = &g->parts[k];
    pthread_mutex_lock(&g->mu);
    int held = pt->lease.held && !pt->lease.revoked;
    uint64_t was = pt->lease.rev;
    int64_t max_ms = pt->lease.max_event_ms;
    int idle = pt->lease.idle;
    char consumer[sizeof pt->lease.consumer];
    memcpy(consumer, pt->lease.consumer, sizeof consumer);
    pthread_mutex_unlock(&g->mu);
    if (!held) continue;
    char key[32], *v = lease_value(g, max_ms, idle, consumer);
    if (v == NULL) continue;
    snprintf(key, sizeof key, "p.%d", k);
    int64_t sent = mono_ms();
    natsStatus s = kvStore_UpdateString(&rev, g->leases, key, v, was);
    free(v);
    pthread_mutex_lock(&g->mu);
    if (pt->lease.held && pt->lease.rev == was) {
      if (s == NATS_OK) {
        pt->lease.rev = rev;
        pt->lease.valid_until = sent + g->lease_ms - g->lease_ms / 4;
      } else if (!tw__nats_transient(s)) {
        pt->lease.revoked = 1; /* expired and taken, or deleted: another revision */
      }
    }
    pthread_mutex_unlock(&g->mu);
  }
}

static void *renewer_main(void *arg) {
  group_t *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->quit) {
    pthread_mutex_unlock(&g->mu);
    renew_all(g);
    pthread_mutex_lock(&g->mu);
    struct timespec until; /* the condition waits on the monotonic clock (a clock step cannot
                              stop the renewals) */
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t ns = until.tv_nsec + (g->lease_ms / 4) * 1000000LL;
    until.tv_sec += ns / 1000000000LL;
    until.tv_nsec = ns % 1000000000LL;
    if (!g->quit) pthread_cond_timedwait(&g->cv, &g->mu, &until);
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

/* ---- partitions: take, give up, lose ------------------------------------------------------- */

/* Take partition pt, whose lease this engine has just created (revision rev). */
static int take(group_t *g, part_t *pt, uint64_t rev, int64_t valid_until, int again) {
  lease_hold(g, pt, rev, valid_until);
  pt->owned = 1;
  g->n_owned++;
  if (!again) g->st->acquired++;
  uint64_t local = 0, ckpt = 0;
  int found = 0;
  char err[1024], name[32];
  snprintf(name, sizeof name, "partition-%d", pt->k);
  int rc = open_pipeline(g, pt, &local);
  if (rc != 0) return rc;
  rc = tw_nats_obj_info(g->js, TW_NATS_CHECKPOINT_BUCKET, name, &found, &ckpt, NULL, err,
                        sizeof err);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: cannot read its checkpoint: %s", pt->k, err);
    return rc;
  }
  const char *from = "its local state";
  if (found && ckpt > local) {
    tw_pipeline_abandon(pt->p); /* nothing processed: only opened */
    pt->p = NULL;
    rc = restore(g, pt);
    if (rc == 0) rc = open_pipeline(g, pt, &local);
    if (rc != 0) return rc;
    g->st->restored++;
    from = "the checkpoint";
  }
  uint64_t again_n = 0;
  rc = tw_pipeline_republish(pt->p, &again_n);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: cannot read its alert journal: %s", pt->k,
             tw_strerror(rc));
    return rc;
  }
  g->st->republished += again_n;
  tw_pipeline_stats_t rs;
  tw_pipeline_stats(pt->p, &rs);
  if (rs.sink_errors > 0) {
    snprintf(g->errbuf, g->errcap,
             "partition %d: %llu alert(s) of its journal could not be handed to the sinks",
             pt->k, (unsigned long long)rs.sink_errors);
    return TW_EIO; /* taken again later, when ALERTS takes them */
  }
  rc = tw_nats_consumer_open(g->nc, g->js, pt->k, g->id, local, g->o.format, 0, &pt->c, err,
                             sizeof err);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: %s", pt->k, err);
    return rc;
  }
  lease_consumer(g, pt);
  tw_pipeline_stats_t ps;
  tw_pipeline_stats(pt->p, &ps);
  pt->sink_errors = ps.sink_errors;
  pt->alerts = ps.alerts;
  pt->uncommitted = 0;
  pt->idle_since_ms = 0;
  pt->fetch_failing_since = 0;
  pt->swept_to_ms = INT64_MIN;
  pt->last_commit_ms = pt->last_ckpt_ms = mono_ms();
  pt->ckpt_seq = found ? ckpt : 0;
  if (!again)
    logf_(g,
          "partition %d: taken (lease revision %llu), resuming after stream sequence %llu from %s",
          pt->k, (unsigned long long)rev, (unsigned long long)local, from);
  return 0;
}

/* Free what the engine holds for pt, without committing. */
static void let_go(group_t *g, part_t *pt) {
  if (pt->p != NULL) {
    tw_pipeline_stats_t ps;
    tw_pipeline_stats(pt->p, &ps);
    g->st->alerts += ps.alerts - pt->alerts;
  }
  tw_nats_consumer_close(pt->c);
  pt->c = NULL;
  tw_pipeline_abandon(pt->p);
  pt->p = NULL;
  if (pt->owned) g->n_owned--;
  pt->owned = 0;
  uint64_t rev;
  int64_t valid;
  lease_keep(g, pt, &rev, &valid);
}

/* The lease is gone or could not be renewed in time: drop the partition without committing
 * anything more (the next owner processes those events again from its own position). */
static void lose(group_t *g, part_t *pt) {
  pthread_mutex_lock(&g->mu);
  const char *why = pt->lease.revoked ? "another revision holds it" : "not renewed in time";
  pthread_mutex_unlock(&g->mu);
  logf_(g, "partition %d: lease lost (%s); dropped what was not committed", pt->k, why);
  g->st->lost++;
  let_go(g, pt);
}

static int commit_part(group_t *g, part_t *pt);
static int after_commit(group_t *g, part_t *pt);
static void give_back(group_t *g, part_t *pt);

static int checkpoint(group_t *g, part_t *pt) {
  char tmp[GROUP_PATH_MAX], file[GROUP_PATH_MAX + 16], name[32], err[1024];
  snprintf(name, sizeof name, "partition-%d", pt->k);
  if (fresh_dir(g, pt->k, ".checkpoint", tmp, sizeof tmp) != 0) return TW_EIO;
  uint64_t seq = 0;
  int rc = commit_part(g, pt);
  if (rc != 0 || !pt->owned) {
    rm_rf(tmp);
    return rc;
  }
  rc = tw_pipeline_checkpoint(pt->p, tmp, &seq);
  snprintf(file, sizeof file, "%s/data.mdb", tmp);
  /* Fencing: a checkpoint is put only while the lease is valid. */
  if (rc == 0 && !lease_ok(g, pt)) rc = TW_EAGAIN;
  if (rc == 0) {
    rc = tw_nats_obj_put(g->js, TW_NATS_CHECKPOINT_BUCKET, g->o.replicas, name, file, seq, err,
                         sizeof err);
    if (rc != 0) logf_(g, "partition %d: checkpoint not written: %s", pt->k, err);
  }
  rm_rf(tmp);
  if (rc == 0) {
    pt->ckpt_seq = seq;
    g->st->checkpoints++;
  }
  pt->last_ckpt_ms = mono_ms();
  return rc == TW_EAGAIN || rc == TW_EIO ? 0 : rc; /* a failed put waits for the next interval */
}

/* Give pt up: checkpoint (which commits), then delete the lease. */
static int release(group_t *g, part_t *pt, const char *why) {
  int rc = checkpoint(g, pt);
  if (rc != 0 || !pt->owned) return rc; /* lost meanwhile: already let go */
  logf_(g, "partition %d: given up (%s) after stream sequence %llu", pt->k, why,
        (unsigned long long)pt->ckpt_seq);
  g->st->released++;
  uint64_t rev = 0;
  int64_t valid = 0;
  lease_keep(g, pt, &rev, &valid);
  let_go(g, pt);
  if (mono_ms() <= valid) lease_delete(g, pt->k, rev);
  return 0;
}

/* Commit pt and acknowledge what the commit covers. An alert the sinks refused is handed over
 * again by reopening the pipeline (its journal is republished from the last recorded position). */
static int commit_part(group_t *g, part_t *pt) {
  if (!lease_ok(g, pt)) {
    lose(g, pt);
    return 0;
  }
  int rc = tw_pipeline_commit(pt->p);
  if (rc != 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: commit failed: %s", pt->k, tw_strerror(rc));
    return rc;
  }
  g->st->commits++;
  pt->uncommitted = 0;
  pt->last_commit_ms = mono_ms();
  return after_commit(g, pt);
}

/* After a commit of pt (commit_part, or one inside tw_pipeline_tick): acknowledge what it covers,
 * report the newest event time, and if a sink refused an alert, hand the journal over again by
 * reopening the partition now, before the next commit records the hand-over as done. */
static int after_commit(group_t *g, part_t *pt) {
  tw_nats_consumer_ack(pt->c, tw_pipeline_stream_done(pt->p));
  pthread_mutex_lock(&g->mu);
  pt->lease.max_event_ms = tw_pipeline_max_event_time(pt->p);
  pthread_mutex_unlock(&g->mu);
  tw_pipeline_stats_t ps;
  tw_pipeline_stats(pt->p, &ps);
  if (ps.sink_errors <= pt->sink_errors) return 0;
  logf_(g, "partition %d: %llu alert(s) not accepted by a sink; handing the journal over again",
        pt->k, (unsigned long long)(ps.sink_errors - pt->sink_errors));
  uint64_t rev = 0;
  int64_t valid = 0;
  lease_keep(g, pt, &rev, &valid);
  let_go(g, pt);
  int rc = take(g, pt, rev, valid, 1);
  if (rc == TW_EIO) { /* ALERTS still refuses: give the partition up; it is taken again later */
    logf_(g, "partition %d: cannot reopen it: %s; lease given up", pt->k, g->errbuf);
    give_back(g, pt);
    rc = 0;
  }
  return rc;
}

/* Let pt go and delete its lease if it is still ours (a take that failed, a reopen that failed). */
static void give_back(group_t *g, part_t *pt) {
  uint64_t rev = 0;
  int64_t valid = 0;
  lease_keep(g, pt, &rev, &valid);
  let_go(g, pt);
  lease_delete(g, pt->k, rev);
  g->claim_pause_until = mono_ms() + g->lease_ms; /* NATS is struggling: a moment first */
}

/* ---- balance -------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Which engine (by rank among the sorted live ids) prefers partition k: spreads them evenly. */
static int preferred_rank(int k, int members) {
  return members > 0 ? k % members : 0;
}

/* Survey the bucket (live engines, held partitions, the stream's newest event time), then give
 * up what is over this engine's share and take free partitions up to it. */
static int balance(group_t *g) {
  for (int k = 0; k < g->o.partitions; k++)
    if (g->parts[k].owned && !lease_ok(g, &g->parts[k])) lose(g, &g->parts[k]);
  /* No key listing (libnats lists keys through a new consumer each time, which a cluster makes
   * through its metadata leader): the live engines are the subjects of engines.* in the bucket's
   * stream, and each partition's lease is read directly. */
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Stream.Info.SubjectsFilter = "$KV." TW_NATS_LEASE_BUCKET ".engines.>";
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, g->js, "KV_" TW_NATS_LEASE_BUCKET, &jo, &jerr);
  if (s != NATS_OK) {
    if (s == NATS_CONNECTION_CLOSED) {
      tw__nats_err(g->errbuf, g->errcap, "cannot read the leases", s, jerr);
      return TW_EIO;
    }
    return 0; /* a transient failure: the next round tries again */
  }
  int n_subjects = si->State.Subjects != NULL ? si->State.Subjects->Count : 0;
  char **ids = calloc((size_t)n_subjects + 1, sizeof *ids);
  unsigned char *held = calloc((size_t)g->o.partitions, 1);
  if (ids == NULL || held == NULL) {
    free(ids);
    free(held);
    jsStreamInfo_Destroy(si);
    return TW_ENOMEM;
  }
  int n_ids = 0;
  const size_t prefix = strlen("$KV." TW_NATS_LEASE_BUCKET ".");
  for (int i = 0; i < n_subjects; i++) {
    const char *subj = si->State.Subjects->List[i].Subject;
    if (subj == NULL || strlen(subj) <= prefix + 8) continue;
    kvEntry *e = NULL;
    if (kvStore_Get(&e, g->leases, subj + prefix) != NATS_OK) continue; /* deleted: gone */
    kvEntry_Destroy(e);
    ids[n_ids++] = strdup(subj + prefix + 8);
    if (ids[n_ids - 1] == NULL) n_ids--;
  }
  jsStreamInfo_Destroy(si);
  int all_idle = 1;
  for (int k = 0; k < g->o.partitions; k++) {
    char key[32];
    snprintf(key, sizeof key, "p.%d", k);
    kvEntry *e = NULL;
    s = kvStore_Get(&e, g->leases, key);
    if (s != NATS_OK) all_idle = 0;
    if (s == NATS_NOT_FOUND) continue;
    held[k] = 1; /* held, or unknown after a failure: not taken this round */
    if (s != NATS_OK) continue;
    json_error_t je;
    const char *v = kvEntry_ValueString(e);
    json_t *o = v != NULL ? json_loads(v, 0, &je) : NULL;
    json_t *m = o != NULL ? json_object_get(o, "max_event_ms") : NULL;
    if (json_is_integer(m) && json_integer_value(m) > g->stream_max_ms)
      g->stream_max_ms = json_integer_value(m);
    if (!json_is_true(o != NULL ? json_object_get(o, "idle") : NULL)) all_idle = 0;
    json_decref(o);
    kvEntry_Destroy(e);
  }
  for (int k = 0; k < g->o.partitions; k++)
    if (g->parts[k].owned && g->parts[k].idle_since_ms == 0) all_idle = 0;
  g->stream_idle = all_idle;
  int found_self = 0;
  for (int i = 0; i < n_ids; i++) found_self |= strcmp(ids[i], g->id) == 0;
  if (!found_self && (ids[n_ids] = strdup(g->id)) != NULL) n_ids++;
  qsort(ids, (size_t)n_ids, sizeof *ids, cmp_str);
  g->members = n_ids > 0 ? n_ids : 1;
  g->rank = 0;
  for (int i = 0; i < n_ids; i++)
    if (strcmp(ids[i], g->id) == 0) g->rank = i;
  for (int i = 0; i < n_ids; i++) free(ids[i]);
  free(ids);
  for (int k = 0; k < g->o.partitions; k++)
    if (g->parts[k].owned) held[k] = 1;
  int share = (g->o.partitions + g->members - 1) / g->members;
  int rc = 0;
  int64_t t0 = mono_ms(); /* the claim budget starts after the survey */
  /* More than the share: give up the ones another engine prefers first. */
  for (int pass = 0; pass < 2 && g->n_owned > share && rc == 0; pass++)
    for (int k = g->o.partitions - 1; k >= 0 && g->n_owned > share && rc == 0; k--) {
      part_t *pt = &g->parts[k];
      if (!pt->owned || (pass == 0 && preferred_rank(k, g->members) == g->rank)) continue;
      rc = release(g, pt, "rebalancing");
    }
  /* Fewer: take free ones, the preferred first; for at most a quarter of the lease time per
   * round (taking one makes a consumer and may restore a checkpoint); the rest waits. */
  for (int pass = 0; pass < 2 && g->n_owned < share && rc == 0 && mono_ms() >= g->claim_pause_until;
       pass++)
    for (int k = 0; k < g->o.partitions && g->n_owned < share && rc == 0 &&
                    mono_ms() - t0 < g->lease_ms / 4 && mono_ms() >= g->claim_pause_until;
         k++) {
      part_t *pt = &g->parts[k];
      if (held[k] || pt->owned || (pass == 0 && preferred_rank(k, g->members) != g->rank))
        continue;
      char key[32], *v = lease_value(g, INT64_MIN, 0, NULL);
      if (v == NULL) {
        rc = TW_ENOMEM;
        break;
      }
      snprintf(key, sizeof key, "p.%d", k);
      uint64_t rev = 0;
      int64_t sent = mono_ms();
      s = kvStore_CreateString(&rev, g->leases, key, v);
      free(v);
      if (s != NATS_OK) continue; /* taken by another engine meanwhile, or NATS failed: later */
      rc = take(g, pt, rev, sent + g->lease_ms - g->lease_ms / 4, 0);
      if (rc != 0) {
        logf_(g, "partition %d: cannot take it: %s", k, g->errbuf);
        /* Give the lease back so another engine (or this one, later) can try. A NATS failure (a
         * stream without a leader for a moment) is not the engine's end; a state failure is. */
        give_back(g, pt);
        if (rc == TW_EIO) rc = 0;
      }
    }
  free(held);
  return rc;
}

/* ---- the loop ------------------------------------------------------------------------------- */

static int serve_part(group_t *g, part_t *pt, int *busy) {
  if (!lease_ok(g, pt)) {
    lose(g, pt);
    return 0;
  }
  int caught_up = pt->idle_since_ms != 0, n = 0;
  /* A partition read to its end is asked again only every GROUP_IDLE_POLL_MS, and briefly, so it
   * does not hold up the partitions that have messages waiting. */
  int64_t t = mono_ms();
  if (!caught_up || t - pt->last_poll_ms >= GROUP_IDLE_POLL_MS) {
    pt->last_poll_ms = t;
    n = tw_nats_consumer_fetch(pt->c, g->o.fetch_batch, caught_up ? 1 : GROUP_FETCH_WAIT_MS,
                               tw_pipeline_record, pt->p, &caught_up);
  }
  if (n == TW_EAGAIN) {
    /* The fetch failed: a node lost, a leader being elected. After a while of that, the
     * consumer (one copy, perhaps on the lost node) is made again after what it delivered.
     * Meanwhile the partition is not known to be read to its end, so it is not idle: its
     * scheduled rules must not run ahead of events it has not read. */
    pt->idle_since_ms = 0;
    pthread_mutex_lock(&g->mu);
    pt->lease.idle = 0;
    pthread_mutex_unlock(&g->mu);
    int64_t now = mono_ms();
    if (pt->fetch_failing_since == 0) pt->fetch_failing_since = now;
    /* A broken consumer (a delivery that never came) will give nothing more: made again at once,
     * not after GROUP_CONSUMER_RESET_MS. */
    if (now - pt->fetch_failing_since >= GROUP_CONSUMER_RESET_MS ||
        tw_nats_consumer_broken(pt->c)) {
      char err[1024];
      int rrc = tw_nats_consumer_reset(pt->c, err, sizeof err);
      logf_(g, "partition %d: fetches failed for %lld ms; consumer made again%s%s", pt->k,
            (long long)(now - pt->fetch_failing_since), rrc == 0 ? "" : ": failed: ",
            rrc == 0 ? "" : err);
      pt->fetch_failing_since = rrc == 0 ? 0 : mono_ms();
      lease_consumer(g, pt);
    }
    return 0;
  }
  /* Only a fetch that delivered, or that found the partition read to its end, shows the
   * consumer works (an empty fetch between two failures does not). */
  if (n > 0 || caught_up) pt->fetch_failing_since = 0;
  if (n < 0) {
    snprintf(g->errbuf, g->errcap, "partition %d: processing failed: %s", pt->k, tw_strerror(n));
    return n;
  }
  g->st->records += (uint64_t)n;
  pt->uncommitted += (uint64_t)n;
  if (n > 0) *busy = 1;
  if (n == 0 && !caught_up && tw_nats_consumer_pending(pt->c) >= TW_NATS_MAX_ACK_PENDING) {
    /* Every message the consumer may have outstanding waits for a commit that cannot cover it:
     * the events held for the watermark span more than TW_NATS_MAX_ACK_PENDING messages. Process
     * them now (as at the end of an input) rather than stall the partition. */
    logf_(g, "partition %d: %d messages wait for the watermark; processing them now", pt->k,
          TW_NATS_MAX_ACK_PENDING);
    int frc = tw_pipeline_flush(pt->p);
    if (frc != 0) {
      snprintf(g->errbuf, g->errcap, "partition %d: %s", pt->k, tw_strerror(frc));
      return frc;
    }
    pt->uncommitted++; /* commit below */
  }
  int64_t now = mono_ms();
  if (!caught_up) {
    pt->idle_since_ms = 0;
  } else if (pt->idle_since_ms == 0) {
    pt->idle_since_ms = now;
  }
  int idle = pt->idle_since_ms != 0 && now - pt->idle_since_ms >= GROUP_CAUGHT_UP_MS;
  pthread_mutex_lock(&g->mu);
  pt->lease.idle = idle;
  pthread_mutex_unlock(&g->mu);
  int rc = 0;
  if (pt->uncommitted >= g->commit_every ||
      (pt->uncommitted > 0 && (caught_up || now - pt->last_commit_ms >= GROUP_COMMIT_MS)))
    rc = commit_part(g, pt);
  if (rc != 0 || !pt->owned) return rc;
  /* Nothing to read for a while: the events held for the watermark are processed (tick), and
   * scheduled rules run up to the newest event time of the whole stream. */
  if (pt->idle_since_ms != 0 && now - pt->idle_since_ms >= GROUP_CAUGHT_UP_MS) {
    if (!lease_ok(g, pt)) {
      lose(g, pt);
      return 0;
    }
    rc = tw_pipeline_tick(pt->p, wall_ms()); /* commits what it released */
    if (rc == 0) rc = after_commit(g, pt);
    if (rc != 0 || !pt->owned) return rc;
    /* The whole stream is quiet (every partition idle, as its owner reports): what a batch run
     * does at the end of its input. */
    if (rc == 0 && g->stream_idle && g->stream_max_ms > pt->swept_to_ms) {
      int64_t own = tw_pipeline_max_event_time(pt->p);
      int64_t limit = g->stream_max_ms > own ? g->stream_max_ms : own;
      rc = tw_pipeline_sweep_until(pt->p, limit);
      if (rc == 0) pt->swept_to_ms = g->stream_max_ms;
      if (rc == 0) rc = commit_part(g, pt);
    }
    if (rc != 0) snprintf(g->errbuf, g->errcap, "partition %d: %s", pt->k, tw_strerror(rc));
  }
  if (rc == 0 && pt->owned && g->o.checkpoint_ms > 0 &&
      now - pt->last_ckpt_ms >= g->o.checkpoint_ms &&
      tw_pipeline_stream_done(pt->p) > pt->ckpt_seq)
    rc = checkpoint(g, pt);
  return rc;
}

static int valid_id(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > TW_NATS_ENGINE_ID_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '_'))
      return 0;
  }
  return 1;
}

int tw_nats_group_run(const tw_nats_group_opts_t *opts, tw_nats_group_stats_t *stats,
                      char *errbuf, size_t errcap) {
  tw_nats_group_stats_t local_stats;
  if (stats == NULL) stats = &local_stats;
  memset(stats, 0, sizeof *stats);
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (opts == NULL || opts->url == NULL || opts->partitions < 1 ||
      opts->partitions > TW_NATS_PARTITIONS_MAX || opts->replicas < 0 || opts->replicas > 5 ||
      (opts->lease_ms != 0 && opts->lease_ms < 1000) || opts->fetch_batch < 0 ||
      opts->pipeline.rules_path == NULL || opts->pipeline.state_dir == NULL ||
      opts->pipeline.shared_outputs == NULL || opts->stop == NULL) {
    snprintf(errbuf, errcap, "invalid engine-group options");
    return TW_EINVAL;
  }
  group_t g;
  memset(&g, 0, sizeof g);
  g.o = *opts;
  g.st = stats;
  g.errbuf = errbuf;
  g.errcap = errcap;
  g.lease_ms = opts->lease_ms > 0 ? opts->lease_ms : TW_NATS_DEFAULT_LEASE_MS;
  if (g.o.checkpoint_ms == 0) g.o.checkpoint_ms = TW_NATS_DEFAULT_CHECKPOINT_MS;
  if (g.o.fetch_batch == 0) g.o.fetch_batch = 1000;
  g.commit_every = g.o.pipeline.batch_events > 0 ? g.o.pipeline.batch_events : 1000;
  /* The pipelines never commit by themselves (on a batch count): every commit goes through
   * commit_part, which checks the lease first and the sinks after. */
  g.o.pipeline.batch_events = SIZE_MAX / 2;
  g.o.pipeline.live = true;
  g.o.pipeline.on_commit = NULL;
  g.o.pipeline.shard_index = g.o.pipeline.n_shards = 0;
  g.stream_max_ms = INT64_MIN;
  if (opts->engine_id != NULL) {
    if (!valid_id(opts->engine_id)) {
      snprintf(errbuf, errcap,
               "engine id '%s': use 1 to %d letters, digits, '-' or '_'", opts->engine_id,
               TW_NATS_ENGINE_ID_MAX);
      return TW_EINVAL;
    }
    snprintf(g.id, sizeof g.id, "%s", opts->engine_id);
  } else {
    char host[64] = "engine";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++)
      if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
        *c = '-';
    snprintf(g.id, sizeof g.id, "%.40s-%ld", host, (long)getpid());
  }
  snprintf(g.member_key, sizeof g.member_key, "engines.%s", g.id);
  g.parts = calloc((size_t)opts->partitions, sizeof *g.parts);
  if (g.parts == NULL) return TW_ENOMEM;
  for (int k = 0; k < opts->partitions; k++) g.parts[k].k = k;
  pthread_mutex_init(&g.mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g.cv, &ca);
  pthread_condattr_destroy(&ca);
  int rc = tw__nats_connect(opts->url, &g.nc, &g.js, errbuf, errcap);
  if (rc == 0)
    rc = tw__nats_events_stream(g.js, opts->partitions, opts->replicas, errbuf, errcap);
  if (rc == 0) rc = share_pseudonym_key(&g);
  if (rc == 0) {
    for (int attempt = 1; attempt <= STARTUP_ATTEMPTS; attempt++) {
      rc = tw_nats_obj_bucket(g.js, TW_NATS_CHECKPOINT_BUCKET, opts->replicas, errbuf, errcap);
      if (rc == 0) break;
      nats_Sleep(1000);
    }
  }
  natsStatus s = NATS_OK;
  if (rc == 0) RETRY(js_KeyValue(&g.leases, g.js, TW_NATS_LEASE_BUCKET));
  if (rc == 0 && s == NATS_OK) {
    /* The group's lease time is the bucket's TTL, set by the engine that made it. */
    kvStatus *ks = NULL;
    if (kvStore_Status(&ks, g.leases) == NATS_OK) {
      int64_t ttl_ms = kvStatus_TTL(ks) / TW_NATS_MS_TO_NS;
      if (ttl_ms >= 1000 && ttl_ms != g.lease_ms) {
        if (opts->lease_ms != 0)
          logf_(&g, "the group's leases last %lld ms (bucket %s); --lease is ignored",
                (long long)ttl_ms, TW_NATS_LEASE_BUCKET);
        g.lease_ms = ttl_ms;
      }
      kvStatus_Destroy(ks);
    }
  } else if (rc == 0) {
    g.leases = NULL;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = TW_NATS_LEASE_BUCKET;
    kc.History = 1;
    kc.TTL = g.lease_ms * TW_NATS_MS_TO_NS; /* libnats passes it on as the stream's MaxAge (ns) */
    kc.StorageType = js_FileStorage;
    kc.Replicas = opts->replicas > 0 ? opts->replicas : 1;
    RETRY(js_CreateKeyValue(&g.leases, g.js, &kc));
    if (s != NATS_OK) RETRY(js_KeyValue(&g.leases, g.js, TW_NATS_LEASE_BUCKET)); /* made meanwhile */
    if (s != NATS_OK) {
      tw__nats_err(errbuf, errcap, "cannot open the key-value bucket " TW_NATS_LEASE_BUCKET, s, 0);
      rc = TW_EIO;
    }
  }
  if (rc == 0) {
    logf_(&g, "joined the group at %s: %d partitions, leases of %lld ms", opts->url,
          opts->partitions, (long long)g.lease_ms);
    if (pthread_create(&g.renewer, NULL, renewer_main, &g) != 0) {
      snprintf(errbuf, errcap, "cannot start the lease renewer thread");
      rc = TW_ENOMEM;
    } else {
      g.renewer_started = 1;
    }
  }
  /* The first balance waits half a lease time (at most GROUP_JOIN_WAIT_MS), so engines started
   * together see each other
   * (their keys are put by the renewers at once) and each takes its share, not all. */
  int64_t next_round = mono_ms() + (g.lease_ms / 2 < GROUP_JOIN_WAIT_MS ? g.lease_ms / 2
                                                                        : GROUP_JOIN_WAIT_MS);
  while (rc == 0 && !*opts->stop) {
    if (mono_ms() >= next_round) {
      rc = balance(&g);
      next_round = mono_ms() + g.lease_ms / 4;
      if (rc != 0) break;
    }
    if (natsConnection_Status(g.nc) == NATS_CONN_STATUS_CLOSED) {
      snprintf(errbuf, errcap, "the connection to NATS is closed for good");
      rc = TW_EIO;
      break;
    }
    int busy = 0;
    for (int k = 0; k < opts->partitions && rc == 0 && !*opts->stop; k++)
      if (g.parts[k].owned) rc = serve_part(&g, &g.parts[k], &busy);
    /* Nothing came: wait a little (longer when every partition held has been idle a while). */
    int all_idle = 1;
    for (int k = 0; k < opts->partitions; k++)
      if (g.parts[k].owned && g.parts[k].idle_since_ms == 0) all_idle = 0;
    if (!busy && rc == 0) nats_Sleep(all_idle ? GROUP_QUIET_SLEEP_MS : GROUP_IDLE_SLEEP_MS);
  }
  /* Stop: every partition is committed, checkpointed and given up, so the others take them at
   * once; after a failure they are only dropped (the leases expire). */
  for (int k = 0; k < opts->partitions; k++) {
    part_t *pt = &g.parts[k];
    if (!pt->owned) continue;
    if (rc == 0) {
      int rrc = release(&g, pt, "stopping");
      if (rrc != 0) rc = rrc;
    }
    if (pt->owned) let_go(&g, pt);
  }
  if (g.renewer_started) {
    pthread_mutex_lock(&g.mu);
    g.quit = 1;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.renewer, NULL);
  }
  if (g.leases != NULL) {
    if (rc == 0) (void)kvStore_Delete(g.leases, g.member_key);
    kvStore_Destroy(g.leases);
  }
  pthread_mutex_destroy(&g.mu);
  pthread_cond_destroy(&g.cv);
  jsCtx_Destroy(g.js);
  natsConnection_Destroy(g.nc);
  free(g.parts);
  return rc;
}
