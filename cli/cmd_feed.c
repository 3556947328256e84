/*
 * cmd_feed.c: `tutorwatch feed`: subscribe to a regulator or self-check feed and print alerts as
 * JSON Lines, optionally catching up from the history endpoint first.
 *
 * A ZeroMQ SUB socket connects to the engine's XPUB endpoint and subscribes to each --topic
 * prefix (none: everything). Each alert arrives as [topic, payload]; the payload (msgpack or
 * JSON, with the feed sequence "seq" as its first key) is printed as one JSON line, flushed per
 * line. With --key and --server-pub the connection is CURVE-encrypted and authenticated.
 *
 * --since SEQ: subscribe first (alerts arriving meanwhile wait in the socket), then page through
 * history (REQ to --history) for every prefix from SEQ, merging the prefixes' pages in sequence
 * order (an alert matching two prefixes prints once); then follow live, printing only sequences
 * above the last printed. When the first live alert S arrives, history is asked once more for
 * what lies between the last printed and S, so alerts published while the subscription was
 * taking effect are not lost: no gap, no duplicate (the engine puts every alert in history
 * before it sends it live). Memory: one history round (≤ 1000 alerts per prefix).
 *
 * Stops after --count alerts, after --timeout-ms without one, or on SIGINT/SIGTERM; waits are
 * sliced into FEED_SLICE_MS so a signal is seen promptly.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "tw_auth.h"
#include "tw_cli.h"
#include "tw_error.h"
#include "tw_feed_codec.h"

#define FEED_MAX_TOPICS 64
#define FEED_MAX_MSG_BYTES (1 << 20)
#define FEED_SLICE_MS 200
#define FEED_HISTORY_TIMEOUT_MS 10000
#define FEED_HISTORY_PAGE 500

static volatile sig_atomic_t g_feed_stop;

static void on_signal(int sig) {
  (void)sig;
  g_feed_stop = 1;
}

static void feed_usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch feed --connect ENDPOINT [--topic PREFIX]... [--count N]\n"
      "                       [--timeout-ms MS] [--key NAME.key --server-pub FILE.pub]\n"
      "                       [--since SEQ --history ENDPOINT]\n"
      "\n"
      "Subscribe to a feed (the engine's regulator or self-check endpoint) and print each\n"
      "alert as one line of JSON on stdout, as it arrives, with its feed sequence number as\n"
      "the first key: {\"seq\":12,\"alert_id\":...}.\n"
      "\n"
      "Regulator feed topics are \"<region>/<severity>/<rule>\", e.g.\n"
      "\"440106/high/prepaid_over_cap\", and a subscription is a topic prefix. The region is\n"
      "the 6-digit administrative code (GB/T 2260): 2 digits for the province, 4 for the city,\n"
      "6 for the county, so\n"
      "  --topic 44      Guangdong province\n"
      "  --topic 4401    Guangzhou city\n"
      "  --topic 440106  Tianhe district\n"
      "  --topic 440106/critical/   only critical alerts in Tianhe\n"
      "On the self-check feed the topic is the institution's 18-character credit code.\n"
      "With keys, the engine accepts only subscriptions inside the key's scope.\n"
      "\n"
      "options:\n"
      "  --connect ENDPOINT   the feed's endpoint: tcp://HOST:PORT or ipc:///path (required)\n"
      "  --topic PREFIX       subscribe to a prefix; repeat for several (at most %d);\n"
      "                       none subscribes to every alert\n"
      "  --count N            exit after N alerts\n"
      "  --timeout-ms MS      exit after MS milliseconds without an alert (default: wait)\n"
      "  --key NAME.key       this client's secret key (from `tutorwatch keys gen NAME`)\n"
      "  --server-pub FILE    the engine's public key (the .pub of its --server-key)\n"
      "  --since SEQ          first print the alerts after feed sequence SEQ from history,\n"
      "                       then follow live with no gap and no duplicate\n"
      "  --history ENDPOINT   the engine's history endpoint (needed by --since)\n"
      "  -h, --help           show this help\n"
      "\n"
      "Exit status: 0 after N alerts, the timeout, or SIGINT/SIGTERM; 1 on a connection,\n"
      "history or output error (a history request outside the key's scope is refused);\n"
      "2 usage error.\n"
      "\n"
      "example:\n"
      "  tutorwatch feed --connect tcp://127.0.0.1:7601 --topic 4401 --count 10\n",
      FEED_MAX_TOPICS);
}

static int parse_positive(const char *s, long max, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > max) return -1;
  *out = v;
  return 0;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct feed_client {
  const char *endpoint, *history_ep;
  const char *topics[FEED_MAX_TOPICS];
  size_t n_topics;
  int self_check; /* topics are credit codes */
  int curve;
  char secret[TW_AUTH_Z85_LEN + 1], public_[TW_AUTH_Z85_LEN + 1], server[TW_AUTH_Z85_LEN + 1];
  void *ctx, *sub, *req;
  uint64_t last_seq; /* highest sequence printed */
  long printed, count;
  tw_feed_buf_t line;
} feed_client_t;

/* print_payload: one alert as a JSON line. Returns 0, or -1 on an output error (a payload that
 * is not an alert is reported and skipped). */
static int print_payload(feed_client_t *fc, const char *data, size_t len) {
  fc->line.len = 0;
  if (tw_feed_to_json(data, len, &fc->line) != 0) {
    fprintf(stderr, "tutorwatch feed: skipped a message that is not an alert\n");
    return 0;
  }
  if (fwrite(fc->line.data, 1, fc->line.len, stdout) != fc->line.len ||
      fputc('\n', stdout) == EOF || fflush(stdout) != 0)
    return -1;
  fc->printed++;
  return 0;
}

static int setup_socket(feed_client_t *fc, void *s) {
  int64_t max_msg = FEED_MAX_MSG_BYTES;
  int linger_ms = 0;
  if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
      zmq_setsockopt(s, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0)
    return -1;
  if (fc->curve && tw_auth_client_socket(s, fc->secret, fc->public_, fc->server) != 0) return -1;
  return 0;
}

/* A history page for one prefix: its alerts (seq, payload) in order and where it ended. */
typedef struct page {
  uint64_t next;
  int more;
  size_t n;
  uint64_t *seqs;
  zmq_msg_t *msgs;
} page_t;

static void page_free(page_t *p) {
  for (size_t i = 0; i < p->n; i++) zmq_msg_close(&p->msgs[i]);
  free(p->seqs);
  free(p->msgs);
  memset(p, 0, sizeof *p);
}

/* history_page: ask for prefix since `since`; fills *pg. Returns 0 or -1 (reported). */
static int history_page(feed_client_t *fc, const char *prefix, uint64_t since, page_t *pg) {
  memset(pg, 0, sizeof *pg);
  json_t *req = json_pack("{s:s,s:I,s:i,s:s}", "prefix", prefix, "since", (json_int_t)since, "max",
                          FEED_HISTORY_PAGE, "view", fc->self_check ? "self-check" : "feed");
  char *s = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  if (s == NULL) return -1;
  int rc = zmq_send(fc->req, s, strlen(s), 0);
  free(s);
  if (rc < 0) {
    fprintf(stderr, "tutorwatch feed: history %s: %s\n", fc->history_ep, zmq_strerror(zmq_errno()));
    return -1;
  }
  zmq_msg_t head;
  zmq_msg_init(&head);
  if (zmq_msg_recv(&head, fc->req, 0) < 0) {
    fprintf(stderr, "tutorwatch feed: history %s: %s\n", fc->history_ep,
            zmq_errno() == EAGAIN ? "no answer (is the engine serving --history there, and is "
                                    "the key admitted?)"
                                  : zmq_strerror(zmq_errno()));
    zmq_msg_close(&head);
    return -1;
  }
  int more = zmq_msg_more(&head);
  json_error_t jerr;
  json_t *h = json_loadb(zmq_msg_data(&head), zmq_msg_size(&head), 0, &jerr);
  zmq_msg_close(&head);
  int ok = json_is_true(json_object_get(h, "ok"));
  if (!ok) {
    const char *e = json_string_value(json_object_get(h, "error"));
    fprintf(stderr, "tutorwatch feed: history refused prefix '%s': %s\n", prefix,
            e ? e : "malformed answer");
    json_decref(h);
    while (more) { /* drain the rest of a malformed answer */
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, fc->req, 0) < 0)
        more = 0;
      else
        more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    return -1;
  }
  pg->next = (uint64_t)json_integer_value(json_object_get(h, "next"));
  pg->more = json_is_true(json_object_get(h, "more"));
  json_decref(h);
  size_t cap = 0;
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, fc->req, 0) < 0) {
      zmq_msg_close(&m);
      page_free(pg);
      fprintf(stderr, "tutorwatch feed: history answer cut short\n");
      return -1;
    }
    more = zmq_msg_more(&m);
    if (pg->n == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      uint64_t *ns = realloc(pg->seqs, ncap * sizeof *ns);
      if (ns != NULL) pg->seqs = ns;
      zmq_msg_t *nm = ns ? realloc(pg->msgs, ncap * sizeof *nm) : NULL;
      if (nm == NULL || pg->n > FEED_HISTORY_PAGE * 2) {
        zmq_msg_close(&m);
        page_free(pg);
        fprintf(stderr, "tutorwatch feed: history answer too large\n");
        return -1;
      }
      pg->msgs = nm;
      cap = ncap;
    }
    pg->seqs[pg->n] = tw_feed_payload_seq(zmq_msg_data(&m), zmq_msg_size(&m));
    pg->msgs[pg->n++] = m;
  }
  return 0;
}

/*
 * catch_up: print every alert of the prefixes with since < seq < until (until 0: no bound), in
 * sequence order, once each. Each round asks every unfinished prefix for a page from the round's
 * start and prints what all pages cover (up to the smallest `next` among prefixes with more).
 */
static int catch_up(feed_client_t *fc, uint64_t since, uint64_t until) {
  const char *all = "";
  const char *const *prefixes = fc->n_topics ? fc->topics : &all;
  size_t np = fc->n_topics ? fc->n_topics : 1;
  page_t pages[FEED_MAX_TOPICS];
  int rc = 0;
  for (;;) {
    uint64_t bound = UINT64_MAX;
    int any_more = 0;
    size_t got = 0;
    for (size_t i = 0; i < np; i++) {
      if (history_page(fc, prefixes[i], since, &pages[i]) != 0) {
        rc = -1;
        break;
      }
      got++;
      if (pages[i].more) {
        any_more = 1;
        if (pages[i].next < bound) bound = pages[i].next;
      }
    }
    if (rc == 0) {
      /* merge: repeatedly the smallest unprinted seq ≤ bound across pages */
      size_t at[FEED_MAX_TOPICS] = {0};
      for (;;) {
        uint64_t best = UINT64_MAX;
        size_t bi = 0;
        for (size_t i = 0; i < np; i++)
          if (at[i] < pages[i].n && pages[i].seqs[at[i]] < best)
            best = pages[i].seqs[at[i]], bi = i;
        if (best == UINT64_MAX || best > bound || (until != 0 && best >= until)) break;
        if (best > fc->last_seq && (fc->count == 0 || fc->printed < fc->count)) {
          if (print_payload(fc, zmq_msg_data(&pages[bi].msgs[at[bi]]),
                            zmq_msg_size(&pages[bi].msgs[at[bi]])) != 0) {
            rc = -2;
            break;
          }
          fc->last_seq = best;
        }
        for (size_t i = 0; i < np; i++) /* the same alert under another prefix */
          while (at[i] < pages[i].n && pages[i].seqs[at[i]] <= best) at[i]++;
      }
    }
    for (size_t i = 0; i < got; i++) page_free(&pages[i]);
    if (rc != 0 || !any_more || (until != 0 && bound >= until - 1) ||
        (fc->count != 0 && fc->printed >= fc->count))
      return rc;
    since = bound;
  }
}

static int recv_live(feed_client_t *fc, int *gap_checked) {
  zmq_msg_t topic, payload;
  zmq_msg_init(&topic);
  zmq_msg_init(&payload);
  int rc = 0;
  if (zmq_msg_recv(&topic, fc->sub, 0) < 0) {
    rc = zmq_errno() == EINTR ? 0 : -1;
    goto done;
  }
  if (!zmq_msg_more(&topic)) goto done; /* not [topic, payload]: ignore */
  if (zmq_msg_recv(&payload, fc->sub, 0) < 0) {
    rc = -1;
    goto done;
  }
  while (zmq_msg_more(&payload)) { /* extra frames: keep the last */
    zmq_msg_close(&payload);
    zmq_msg_init(&payload);
    if (zmq_msg_recv(&payload, fc->sub, 0) < 0) {
      rc = -1;
      goto done;
    }
  }
  uint64_t seq = tw_feed_payload_seq(zmq_msg_data(&payload), zmq_msg_size(&payload));
  if (fc->req != NULL) {
    if (seq != 0 && seq <= fc->last_seq) goto done; /* already printed from history */
    if (!*gap_checked && seq > fc->last_seq + 1) {
      *gap_checked = 1;
      int c = catch_up(fc, fc->last_seq, seq);
      if (c != 0) {
        rc = c == -2 ? -2 : -3; /* -3: a history error, already reported */
        goto done;
      }
      if (fc->count != 0 && fc->printed >= fc->count) goto done;
    }
    *gap_checked = 1;
  }
  if (print_payload(fc, zmq_msg_data(&payload), zmq_msg_size(&payload)) != 0) {
    rc = -2;
    goto done;
  }
  if (seq > fc->last_seq) fc->last_seq = seq;
done:
  zmq_msg_close(&topic);
  zmq_msg_close(&payload);
  return rc;
}

int tw_cmd_feed(int argc, char **argv) {
  static const struct option kOpts[] = {
      {"connect", required_argument, NULL, 'c'}, {"topic", required_argument, NULL, 't'},
      {"count", required_argument, NULL, 'n'},   {"timeout-ms", required_argument, NULL, 'w'},
      {"key", required_argument, NULL, 'k'},     {"server-pub", required_argument, NULL, 'p'},
      {"since", required_argument, NULL, 's'},   {"history", required_argument, NULL, 'H'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
  };
  feed_client_t fc;
  memset(&fc, 0, sizeof fc);
  fc.line.max = 8 * FEED_MAX_MSG_BYTES;
  const char *key_path = NULL, *server_pub = NULL;
  long timeout_ms = 0;
  int ch, status = 1, have_since = 0;
  uint64_t since = 0;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", kOpts, NULL)) != -1) {
    switch (ch) {
      case 'c':
        fc.endpoint = optarg;
        break;
      case 't':
        if (fc.n_topics == FEED_MAX_TOPICS) {
          fprintf(stderr, "tutorwatch feed: at most %d --topic prefixes\n", FEED_MAX_TOPICS);
          return 2;
        }
        fc.topics[fc.n_topics++] = optarg;
        break;
      case 'n':
        if (parse_positive(optarg, INT32_MAX, &fc.count) != 0) {
          fprintf(stderr, "tutorwatch feed: --count wants a positive number, not '%s'\n", optarg);
          return 2;
        }
        break;
      case 'w':
        if (parse_positive(optarg, 24L * 3600 * 1000, &timeout_ms) != 0) {
          fprintf(stderr, "tutorwatch feed: --timeout-ms wants a positive number, not '%s'\n",
                  optarg);
          return 2;
        }
        break;
      case 'k':
        key_path = optarg;
        break;
      case 'p':
        server_pub = optarg;
        break;
      case 's': {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (optarg[0] < '0' || optarg[0] > '9' || errno != 0 || *end != '\0') {
          fprintf(stderr,
                  "tutorwatch feed: --since wants a sequence number (0 or more), not '%s'\n",
                  optarg);
          return 2;
        }
        since = v;
        have_since = 1;
        break;
      }
      case 'H':
        fc.history_ep = optarg;
        break;
      case 'h':
        feed_usage(stdout);
        return 0;
      case ':':
        fprintf(stderr, "tutorwatch feed: %s needs a value\n\n", argv[optind - 1]);
        feed_usage(stderr);
        return 2;
      default:
        fprintf(stderr, "tutorwatch feed: unknown option '%s'\n\n", argv[optind - 1]);
        feed_usage(stderr);
        return 2;
    }
  }
  if (fc.endpoint == NULL) {
    fprintf(stderr, "tutorwatch feed: --connect ENDPOINT is required\n\n");
    feed_usage(stderr);
    return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "tutorwatch feed: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if ((key_path == NULL) != (server_pub == NULL)) {
    fprintf(stderr, "tutorwatch feed: --key and --server-pub go together\n");
    return 2;
  }
  if (have_since != (fc.history_ep != NULL)) {
    fprintf(stderr, "tutorwatch feed: --since SEQ and --history ENDPOINT go together\n");
    return 2;
  }
  for (size_t i = 0; i < fc.n_topics; i++) {
    size_t n = strlen(fc.topics[i]);
    int code = n > 6 && fc.topics[i][6] != '/';
    if (i > 0 && code != fc.self_check) {
      fprintf(stderr,
              "tutorwatch feed: mix of region prefixes and credit codes; a feed carries one or "
              "the other\n");
      return 2;
    }
    fc.self_check = code;
  }
  if (key_path != NULL) {
    int rc = tw_auth_read_secret(key_path, fc.secret, fc.public_);
    if (rc == 0) rc = tw_auth_read_public(server_pub, fc.server);
    if (rc != 0) {
      fprintf(stderr, "tutorwatch feed: cannot read the keys %s / %s: %s\n", key_path, server_pub,
              rc == TW_EIO ? strerror(errno) : "not a Z85 key file (see `tutorwatch keys gen`)");
      return 1;
    }
    fc.curve = 1;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  fc.ctx = zmq_ctx_new();
  if (fc.ctx == NULL || (fc.sub = zmq_socket(fc.ctx, ZMQ_SUB)) == NULL ||
      setup_socket(&fc, fc.sub) != 0)
    goto zfail;
  if (fc.n_topics == 0 && zmq_setsockopt(fc.sub, ZMQ_SUBSCRIBE, "", 0) != 0) goto zfail;
  for (size_t i = 0; i < fc.n_topics; i++)
    if (zmq_setsockopt(fc.sub, ZMQ_SUBSCRIBE, fc.topics[i], strlen(fc.topics[i])) != 0) goto zfail;
  if (zmq_connect(fc.sub, fc.endpoint) != 0) goto zfail;
  status = 0;
  if (have_since) {
    int rt = FEED_HISTORY_TIMEOUT_MS;
    fc.req = zmq_socket(fc.ctx, ZMQ_REQ);
    if (fc.req == NULL || setup_socket(&fc, fc.req) != 0 ||
        zmq_setsockopt(fc.req, ZMQ_RCVTIMEO, &rt, sizeof rt) != 0 ||
        zmq_setsockopt(fc.req, ZMQ_SNDTIMEO, &rt, sizeof rt) != 0 ||
        zmq_connect(fc.req, fc.history_ep) != 0) {
      fprintf(stderr, "tutorwatch feed: %s: %s\n", fc.history_ep, zmq_strerror(zmq_errno()));
      status = 1;
      goto out;
    }
    fc.last_seq = since;
    int c = catch_up(&fc, since, 0);
    if (c != 0) {
      if (c == -2) fprintf(stderr, "tutorwatch feed: cannot write to stdout\n");
      status = 1;
      goto out;
    }
  }

  int64_t last_ms = mono_ms();
  int gap_checked = 0;
  while (!g_feed_stop && (fc.count == 0 || fc.printed < fc.count)) {
    long wait_ms = FEED_SLICE_MS;
    if (timeout_ms > 0) {
      long left = timeout_ms - (long)(mono_ms() - last_ms);
      if (left <= 0) break;
      if (left < wait_ms) wait_ms = left;
    }
    zmq_pollitem_t it = {fc.sub, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&it, 1, wait_ms);
    if (rc < 0) {
      if (zmq_errno() == EINTR) continue;
      goto zfail;
    }
    if (rc == 0) continue;
    long before = fc.printed;
    rc = recv_live(&fc, &gap_checked);
    if (rc == -2) {
      fprintf(stderr, "tutorwatch feed: cannot write to stdout\n");
      status = 1;
      goto out;
    }
    if (rc == -3) {
      status = 1;
      goto out;
    }
    if (rc != 0) goto zfail;
    if (fc.printed > before) last_ms = mono_ms();
  }
  goto out;
zfail:
  fprintf(stderr, "tutorwatch feed: %s: %s\n", fc.endpoint, zmq_strerror(zmq_errno()));
  status = 1;
out:
  if (fc.sub != NULL) zmq_close(fc.sub);
  if (fc.req != NULL) zmq_close(fc.req);
  if (fc.ctx != NULL) zmq_ctx_term(fc.ctx);
  tw_feed_buf_free(&fc.line);
  return status;
}
