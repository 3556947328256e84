/*
 * run_net.c: keys or loopback-only, and the feeds sink, for `tutorwatch run` (see run_net.h).
 */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "run_net.h"
#include "tw_lifecycle.h"
#include "tw_error.h"

int run_net_prepare(run_net_t *n) {
  const char *eps[] = {n->listen, n->feed, n->self_check, n->history, n->ingest, n->control};
  if ((n->keys_path == NULL) != (n->server_key_path == NULL)) {
    fprintf(stderr, "tutorwatch run: --keys FILE and --server-key FILE.key go together\n");
    return 2;
  }
  if (n->keys_path != NULL) {
    char err[1024];
    if (!zmq_has("curve")) {
      fprintf(stderr, "tutorwatch run: --keys needs a libzmq with CURVE support\n");
      return 1;
    }
    int rc = tw_auth_load(n->keys_path, n->server_key_path, &n->auth, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "tutorwatch run: %s\n", err);
      return 1;
    }
    fprintf(stderr,
            "tutorwatch run: keys %s: %zu clients; every endpoint uses CURVE and admits only "
            "their keys\n",
            n->keys_path, n->auth->n_clients);
    return 0;
  }
  int any = 0;
  for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
    if (eps[i] == NULL) continue;
    any = 1;
    if (!tw_auth_endpoint_is_local(eps[i])) {
      fprintf(stderr,
              "tutorwatch run: '%s' is reachable from other hosts; without --keys endpoints are "
              "not authenticated and must be loopback (tcp://127.0.0.1:PORT) or ipc://\n",
              eps[i]);
      return 2;
    }
  }
  if (any)
    fprintf(stderr,
            "tutorwatch run: no --keys: endpoints are not authenticated and bound to loopback "
            "only\n");
  return 0;
}

static int open_lifecycle(run_net_t *n, tw_outputs_t *o, const char *state_dir, bool no_sync) {
  tw_lifecycle_opts_t lo = {
      .state_dir = state_dir,
      .control_endpoint = n->control,
      .auth = n->auth,
      .outputs = o,
      .no_sync = no_sync,
  };
  tw_lifecycle_default_deadlines(lo.deadline_ms);
  if (n->escalation != NULL && tw_lifecycle_parse_deadlines(n->escalation, lo.deadline_ms) != 0) {
    fprintf(stderr,
            "tutorwatch run: --escalation wants SEVERITY=DURATION pairs such as "
            "critical=24h,high=72h (0s: none), not '%s'\n",
            n->escalation);
    return 2;
  }
  char err[1024];
  tw_sink_t *s = NULL;
  if (tw_lifecycle_open(&lo, &s, err, sizeof err) != 0) {
    fprintf(stderr, "tutorwatch run: %s\n", err);
    return 1;
  }
  if (tw_outputs_add_sink(o, s) != 0) {
    s->vt->close(s);
    fprintf(stderr, "tutorwatch run: too many outputs\n");
    return 1;
  }
  n->lifecycle = s;
  return 0;
}

void run_net_stop(run_net_t *n) {
  tw_lifecycle_stop(n->lifecycle);
}

int run_net_open_feeds(run_net_t *n, tw_outputs_t *o, const char *state_dir, bool no_sync) {
  if (n->control != NULL) {
    int st = open_lifecycle(n, o, state_dir, no_sync);
    if (st != 0) return st;
  }
  if (n->feed == NULL && n->self_check == NULL && n->history == NULL) return 0;
  tw_feeds_opts_t fo = {
      .state_dir = state_dir,
      .feed_endpoint = n->feed,
      .self_check_endpoint = n->self_check,
      .history_endpoint = n->history,
      .format = n->format,
      .auth = n->auth,
      .no_sync = no_sync,
      .suppress = n->lifecycle != NULL ? tw_lifecycle_snoozed : NULL,
      .suppress_ud = n->lifecycle,
      .sndhwm = n->feed_hwm,
  };
  char err[1024];
  tw_sink_t *s = NULL;
  int rc = tw_feeds_open(&fo, &s, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch run: %s\n", err);
    return 1;
  }
  rc = tw_outputs_add_sink(o, s);
  if (rc != 0) {
    s->vt->close(s);
    fprintf(stderr, "tutorwatch run: too many outputs\n");
    return 1;
  }
  n->feeds = s;
  return 0;
}

void run_net_summary(const run_net_t *n, char *extra, size_t cap) {
  if (n->feeds == NULL) return;
  tw_feeds_stats_t st;
  tw_feeds_stats(n->feeds, &st);
  size_t len = strlen(extra);
  snprintf(extra + len, cap - len, ", %llu dropped by the feed for slow subscribers",
           (unsigned long long)st.dropped);
  len = strlen(extra);
  if (st.unencodable > 0)
    snprintf(extra + len, cap - len, ", %llu alerts the feed could not encode (see above)",
             (unsigned long long)st.unencodable);
  len = strlen(extra);
  if (st.refused > 0)
    snprintf(extra + len, cap - len, ", %llu subscriptions or requests refused (outside scope)",
             (unsigned long long)st.refused);
}

void run_net_close(run_net_t *n) {
  tw_auth_free(n->auth);
  n->auth = NULL;
}
