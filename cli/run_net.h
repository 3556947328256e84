/*
 * run_net.h: the network side of `tutorwatch run` (run_net.c): keys or loopback-only, and the
 * feeds sink (regulator feed, self-check feed, history). Kept out of cmd_run.c so the command
 * only parses options and calls these.
 */
#ifndef TW_RUN_NET_H
#define TW_RUN_NET_H

#include <stdbool.h>
#include <stddef.h>

#include "tw_auth.h"
#include "tw_feeds.h"
#include "tw_pipeline.h"

typedef struct run_net {
  const char *listen, *feed, *self_check, *history, *ingest, *control; /* endpoints or NULL */
  const char *keys_path, *server_key_path;
  tw_feed_format_t format;
  const char *escalation; /* --escalation SPEC, or NULL for the defaults */
  int feed_hwm;           /* --feed-hwm N, 0 for the default */
  tw_sink_t *lifecycle;   /* owned by the outputs once attached */
  tw_auth_t *auth;        /* loaded by run_net_prepare when keys_path is given */
  tw_sink_t *feeds;       /* owned by the outputs once attached */
} run_net_t;

/*
 * run_net_prepare: with --keys, load the keys file and --server-key (both required together);
 * without, refuse any endpoint that is not loopback or ipc and say at start that nothing is
 * authenticated. Returns the exit status to stop with (1 bad keys, 2 usage), or 0 to go on.
 */
int run_net_prepare(run_net_t *n);

/*
 * run_net_open_feeds: with --control, open the alert lifecycle (state_dir/lifecycle) and attach
 * it; when a feed or history endpoint is given, open the feeds sink (history in state_dir/feeds,
 * skipping snoozed alerts) and attach it to o. Returns 0, or the exit status (1 or 2) after
 * printing why.
 */
int run_net_open_feeds(run_net_t *n, tw_outputs_t *o, const char *state_dir, bool no_sync);

/* run_net_stop: stop the lifecycle's control thread; call before closing the outputs. */
void run_net_stop(run_net_t *n);

/* run_net_summary: append ", N dropped ..., M refused ..." for the summary line. */
void run_net_summary(const run_net_t *n, char *extra, size_t cap);

/* run_net_close: free the keys (after the outputs and sources are closed). */
void run_net_close(run_net_t *n);

#endif
