/*
 * cmd_feed.c: `tutorwatch feed`: subscribe to a regulator feed and print alerts as JSON Lines.
 *
 * A ZeroMQ SUB socket connects to the engine's PUB endpoint and subscribes to each --topic
 * prefix (none: everything). Each alert arrives as [topic, JSON]; the JSON frame is printed as
 * one line and stdout is flushed per line, so a pipe sees alerts as they happen. Messages above
 * FEED_MAX_MSG_BYTES are refused by libzmq (a misbehaving publisher cannot exhaust memory).
 *
 * Stops after --count alerts, after --timeout-ms without a message, or on SIGINT/SIGTERM; the
 * wait is sliced into FEED_SLICE_MS so a signal is seen promptly even if zmq_poll restarts.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "tw_cli.h"

#define FEED_MAX_TOPICS 64
#define FEED_MAX_MSG_BYTES (1 << 20)
#define FEED_SLICE_MS 200

static volatile sig_atomic_t g_feed_stop;

static void on_signal(int sig) {
  (void)sig;
  g_feed_stop = 1;
}

static void feed_usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch feed --connect ENDPOINT [--topic PREFIX]... [--count N]\n"
      "                       [--timeout-ms MS]\n"
      "\n"
      "Subscribe to a regulator feed (the engine's ZeroMQ PUB endpoint) and print each alert\n"
      "as one line of JSON on stdout, as it arrives.\n"
      "\n"
      "Topics are \"<region>/<severity>/<rule>\", e.g. \"440106/high/prepaid_over_cap\", and a\n"
      "subscription is a topic prefix. The region is the 6-digit administrative code\n"
      "(GB/T 2260): 2 digits for the province, 4 for the city, 6 for the county, so\n"
      "  --topic 44      Guangdong province\n"
      "  --topic 4401    Guangzhou city\n"
      "  --topic 440106  Tianhe district\n"
      "  --topic 440106/critical/   only critical alerts in Tianhe\n"
      "\n"
      "options:\n"
      "  --connect ENDPOINT  the feed's endpoint: tcp://HOST:PORT or ipc:///path (required)\n"
      "  --topic PREFIX      subscribe to a prefix; repeat for several (at most %d);\n"
      "                      none subscribes to every alert\n"
      "  --count N           exit after N alerts\n"
      "  --timeout-ms MS     exit after MS milliseconds without an alert (default: wait)\n"
      "  -h, --help          show this help\n"
      "\n"
      "Exit status: 0 after N alerts, the timeout, or SIGINT/SIGTERM; 1 on a connection or\n"
      "output error; 2 usage error.\n"
      "\n"
      "example:\n"
      "  tutorwatch feed --connect tcp://127.0.0.1:7601 --topic 4401 --count 10\n",
      FEED_MAX_TOPICS);
}

/* zmq_failed: tell the user which ZeroMQ call failed and why; returns exit status 1. */
static int zmq_failed(const char *endpoint) {
  fprintf(stderr, "tutorwatch feed: %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
  return 1;
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

/* print_alert: receive every frame of one message and print the last (the JSON). Returns 0,
 * or -1 on a ZeroMQ or output error. */
static int print_alert(void *sub) {
  zmq_msg_t msg;
  int more = 1, rc = 0;
  while (more) {
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, sub, 0) < 0) {
      zmq_msg_close(&msg);
      return errno == EINTR ? 0 : -1;
    }
    more = zmq_msg_more(&msg);
    if (!more) {
      size_t n = zmq_msg_size(&msg);
      if ((n > 0 && fwrite(zmq_msg_data(&msg), 1, n, stdout) != n) || fputc('\n', stdout) == EOF ||
          fflush(stdout) != 0)
        rc = -1;
    }
    zmq_msg_close(&msg);
  }
  return rc;
}

int tw_cmd_feed(int argc, char **argv) {
  static const struct option kOpts[] = {
      {"connect", required_argument, NULL, 'c'}, {"topic", required_argument, NULL, 't'},
      {"count", required_argument, NULL, 'n'},   {"timeout-ms", required_argument, NULL, 'w'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
  };
  const char *endpoint = NULL, *topics[FEED_MAX_TOPICS];
  size_t n_topics = 0;
  long count = 0, timeout_ms = 0;
  int ch, status = 1;
  void *ctx = NULL, *sub = NULL;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", kOpts, NULL)) != -1) {
    switch (ch) {
      case 'c':
        endpoint = optarg;
        break;
      case 't':
        if (n_topics == FEED_MAX_TOPICS) {
          fprintf(stderr, "tutorwatch feed: at most %d --topic prefixes\n", FEED_MAX_TOPICS);
          return 2;
        }
        topics[n_topics++] = optarg;
        break;
      case 'n':
        if (parse_positive(optarg, INT32_MAX, &count) != 0) {
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
  if (endpoint == NULL) {
    fprintf(stderr, "tutorwatch feed: --connect ENDPOINT is required\n\n");
    feed_usage(stderr);
    return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "tutorwatch feed: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  ctx = zmq_ctx_new();
  if (ctx == NULL) {
    status = zmq_failed(endpoint);
    goto fail;
  }
  sub = zmq_socket(ctx, ZMQ_SUB);
  if (sub == NULL) {
    status = zmq_failed(endpoint);
    goto fail;
  }
  int64_t max_msg = FEED_MAX_MSG_BYTES;
  int linger_ms = 0;
  if (zmq_setsockopt(sub, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
      zmq_setsockopt(sub, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0) {
    status = zmq_failed(endpoint);
    goto fail;
  }
  if (n_topics == 0 && zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0) {
    status = zmq_failed(endpoint);
    goto fail;
  }
  for (size_t i = 0; i < n_topics; i++)
    if (zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topics[i], strlen(topics[i])) != 0) {
      status = zmq_failed(endpoint);
      goto fail;
    }
  if (zmq_connect(sub, endpoint) != 0) {
    status = zmq_failed(endpoint);
    goto fail;
  }

  long received = 0;
  int64_t last_ms = mono_ms();
  status = 0;
  while (!g_feed_stop && (count == 0 || received < count)) {
    long wait_ms = FEED_SLICE_MS;
    if (timeout_ms > 0) {
      long left = timeout_ms - (long)(mono_ms() - last_ms);
      if (left <= 0) break;
      if (left < wait_ms) wait_ms = left;
    }
    zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&it, 1, wait_ms);
    if (rc < 0) {
      if (zmq_errno() == EINTR) continue;
      {
        status = zmq_failed(endpoint);
        goto fail;
      }
    }
    if (rc == 0) continue;
    if (print_alert(sub) != 0) {
      if (ferror(stdout)) {
        fprintf(stderr, "tutorwatch feed: cannot write to stdout\n");
        status = 1;
        goto fail;
      }
      {
        status = zmq_failed(endpoint);
        goto fail;
      }
    }
    received++;
    last_ms = mono_ms();
  }
fail: /* also the normal way out: status says which */
  if (sub != NULL) zmq_close(sub);
  if (ctx != NULL) zmq_ctx_term(ctx);
  return status;
}
