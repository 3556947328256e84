/*
 * cmd_send.c: `tutorwatch send`: push events from a file or stdin to a running engine.
 *
 * Reads JSON Lines or msgpack with the file source (bounded chunks, bounded record size) and
 * sends each record as one ZeroMQ PUSH message to the engine's PULL endpoint (tw_push_file).
 * Truncated or broken records are sent too, as their first bytes, so the engine dead-letters
 * them instead of losing them silently. Prints one summary line to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "tw_acked.h"
#include "tw_auth.h"
#include "tw_cli.h"

#define SEND_MAX_RECORD_BYTES (16u << 20) /* the engine's ZMQ_MAXMSGSIZE */
#include "tw_error.h"
#include "tw_nats.h"
#include "tw_push.h"
#include "tw_source.h"

#define SEND_DEFAULT_TIMEOUT_MS 30000

static void send_usage(FILE *out) {
  fprintf(out,
          "usage: tutorwatch send --connect ENDPOINT [--format jsonl|msgpack|auto]\n"
          "                       [--timeout-ms MS] [--key NAME.key --server-pub FILE.pub]\n"
          "                       [--acked [--batch N] [--window N]] [FILE|-]\n"
          "       tutorwatch send --nats URL --partitions P [--replicas N] [--format FMT]\n"
          "                       [--timeout-ms MS] [FILE|-]\n"
          "\n"
          "Push events to a running engine (`tutorwatch run` reading a ZeroMQ PULL\n"
          "endpoint), or, with --nats, to the stream EVENTS of NATS JetStream for a group of\n"
          "engines (`run --nats`, docs/scaling.md). Each record of FILE (or stdin when FILE is '-' or missing) is sent as one\n"
          "ZeroMQ PUSH message to the engine's PULL socket. Records are JSON Lines (one event\n"
          "per line) or a stream of msgpack maps; the format follows the file name (*.msgpack,\n"
          "*.mp) unless --format says otherwise. A record longer than 64 KiB, or malformed\n"
          "msgpack, is still sent (its first 4 KiB) so the engine dead-letters it with a reason.\n"
          "\n"
          "options:\n"
          "  --connect ENDPOINT  the engine's endpoint: tcp://HOST:PORT or ipc:///path (required)\n"
          "  --format FORMAT     jsonl, msgpack or auto (default: auto, from the file name)\n"
          "  --timeout-ms MS     give up when no engine takes a message for MS milliseconds, and\n"
          "                      wait at most MS at the end to deliver what is queued\n"
          "                      (default %d)\n"
          "  --key NAME.key      this client's secret key, for an engine run with --keys (the\n"
          "                      key must be listed there with the role operator)\n"
          "  --server-pub FILE   the engine's public key (the .pub of its --server-key)\n"
          "  --acked             acknowledged ingest, to an engine's --ingest endpoint: send\n"
          "                      batches, keep each until the engine has committed it, and\n"
          "                      send the unacknowledged again after a reconnect, so a\n"
          "                      restarted engine loses nothing (its dedup by event_id drops\n"
          "                      the repeats); exits 0 once everything is acknowledged\n"
          "  --batch N           records per batch with --acked (default 500, at most 1000)\n"
          "  --window N          unacknowledged batches in flight with --acked (default 16)\n"
          "  --nats URL          publish to NATS JetStream instead (nats://127.0.0.1:4222): each\n"
          "                      record to stream EVENTS (created if absent) on subject\n"
          "                      tw.events.<partition>, partition = FNV-1a 64 of the\n"
          "                      institution_id mod P, header Nats-Msg-Id = event_id;\n"
          "                      asynchronous, exits 0 once the stream acknowledged every\n"
          "                      record (docs/scaling.md)\n"
          "  --partitions P      the partition count with --nats (1 to 1024; every sender and\n"
          "                      engine of a deployment must use the same P)\n"
          "  --replicas N        copies of stream EVENTS when send creates it (default 1; 3 on a\n"
          "                      three-node cluster)\n"
          "  -h, --help          show this help\n"
          "\n"
          "On success prints \"sent N events (B bytes) to ENDPOINT in T ms\" to stderr.\n"
          "Exit status: 0 sent, 1 input unreadable or engine unreachable, 2 usage error.\n"
          "\n"
          "example:\n"
          "  tutorwatch send --connect tcp://127.0.0.1:7600 events.jsonl\n",
          SEND_DEFAULT_TIMEOUT_MS);
}

static int parse_ms(const char *s, int *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > 24L * 3600 * 1000) return -1;
  *out = (int)v;
  return 0;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* send --nats: publish to JetStream (tw_nats_send). */
static int send_nats(const char *url, int partitions, int replicas, int zmq_options, const char *path,
                     tw_source_opts_t *opts, int timeout_ms) {
  if (url == NULL || partitions == 0) {
    fprintf(stderr, "tutorwatch send: --nats URL and --partitions P go together\n");
    return 2;
  }
  if (zmq_options) {
    fprintf(stderr,
            "tutorwatch send: --nats does not combine with --connect, --acked or --key (JetStream "
            "acknowledges every publish)\n");
    return 2;
  }
  /* Records are bounded as the engine bounds them: an over-long one is sent cut, to be
   * dead-lettered (a JetStream message is at most 1 MiB by default). */
  opts->max_record_bytes = 0;
  tw_nats_send_stats_t st;
  char err[1024];
  double t0 = now_ms();
  int rc = tw_nats_send(url, partitions, replicas, path, opts, timeout_ms, &st, err, sizeof err);
  int e = errno;
  if (rc == 0 || st.records > 0) {
    fprintf(stderr, "sent %llu events (%llu bytes) to %s in %.0f ms",
            (unsigned long long)st.records, (unsigned long long)st.bytes, url, now_ms() - t0);
    if (st.duplicates > 0)
      fprintf(stderr, "; %llu already in the stream (same event_id)",
              (unsigned long long)st.duplicates);
    if (st.unkeyed > 0)
      fprintf(stderr, "; %llu without an institution_id (to partition 0, to be dead-lettered)",
              (unsigned long long)st.unkeyed);
    fputc('\n', stderr);
  }
  if (rc == 0) return 0;
  if (err[0] != '\0') {
    fprintf(stderr, "tutorwatch send: %s\n", err);
    return rc == TW_ENOMEM ? 70 : 1;
  }
  if (rc == TW_ENOENT) {
    fprintf(stderr, "tutorwatch send: %s: no such file\n", path);
    return 1;
  }
  if (rc == TW_EIO) {
    fprintf(stderr, "tutorwatch send: %s: cannot read: %s\n", path, strerror(e));
    return 1;
  }
  fprintf(stderr, "tutorwatch send: %s\n", tw_strerror(rc));
  return rc == TW_ENOMEM ? 70 : 1;
}

int tw_cmd_send(int argc, char **argv) {
  static const struct option kOpts[] = {
      {"connect", required_argument, NULL, 'c'},
      {"format", required_argument, NULL, 'f'},
      {"timeout-ms", required_argument, NULL, 't'},
      {"key", required_argument, NULL, 'k'},
      {"server-pub", required_argument, NULL, 'p'},
      {"acked", no_argument, NULL, 'a'},
      {"batch", required_argument, NULL, 'b'},
      {"window", required_argument, NULL, 'W'},
      {"nats", required_argument, NULL, 'N'},
      {"partitions", required_argument, NULL, 'P'},
      {"replicas", required_argument, NULL, 'R'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *nats_url = NULL;
  int partitions = 0, replicas = 1;
  const char *endpoint = NULL, *path = "-", *key_path = NULL, *server_pub = NULL;
  /* Read whole records up to ZeroMQ's 16 MiB message bound, so the engine sees an over-long
   * record's true length and dead-letters it as too_long rather than as cut-off JSON. */
  tw_source_opts_t opts = {.format = TW_FORMAT_AUTO, .max_record_bytes = SEND_MAX_RECORD_BYTES};
  int timeout_ms = SEND_DEFAULT_TIMEOUT_MS, ch, acked = 0, batch = 500, window = 16;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", kOpts, NULL)) != -1) {
    switch (ch) {
      case 'c':
        endpoint = optarg;
        break;
      case 'f':
        if (tw_format_parse(optarg, &opts.format) != 0) {
          fprintf(stderr, "tutorwatch send: unknown format '%s' (jsonl, msgpack or auto)\n",
                  optarg);
          return 2;
        }
        break;
      case 't':
        if (parse_ms(optarg, &timeout_ms) != 0) {
          fprintf(stderr, "tutorwatch send: --timeout-ms wants a positive number, not '%s'\n",
                  optarg);
          return 2;
        }
        break;
      case 'k':
        key_path = optarg;
        break;
      case 'a':
        acked = 1;
        break;
      case 'b':
      case 'W': {
        int v;
        if (parse_ms(optarg, &v) != 0 || v > (ch == 'b' ? TW_ACKED_BATCH_MAX : 4096)) {
          fprintf(stderr, "tutorwatch send: --%s wants a number from 1 to %d, not '%s'\n",
                  ch == 'b' ? "batch" : "window", ch == 'b' ? TW_ACKED_BATCH_MAX : 4096, optarg);
          return 2;
        }
        if (ch == 'b')
          batch = v;
        else
          window = v;
        break;
      }
      case 'p':
        server_pub = optarg;
        break;
      case 'N':
        nats_url = optarg;
        break;
      case 'P':
        if (parse_ms(optarg, &partitions) != 0 || partitions > TW_NATS_PARTITIONS_MAX) {
          fprintf(stderr, "tutorwatch send: --partitions wants a number from 1 to %d, not '%s'\n",
                  TW_NATS_PARTITIONS_MAX, optarg);
          return 2;
        }
        break;
      case 'R':
        if (parse_ms(optarg, &replicas) != 0 || replicas > 5) {
          fprintf(stderr, "tutorwatch send: --replicas wants 1 to 5, not '%s'\n", optarg);
          return 2;
        }
        break;
      case 'h':
        send_usage(stdout);
        return 0;
      case ':':
        fprintf(stderr, "tutorwatch send: %s needs a value\n\n", argv[optind - 1]);
        send_usage(stderr);
        return 2;
      default:
        fprintf(stderr, "tutorwatch send: unknown option '%s'\n\n", argv[optind - 1]);
        send_usage(stderr);
        return 2;
    }
  }
  if (nats_url != NULL || partitions != 0) {
    if (argc - optind > 1) {
      fprintf(stderr, "tutorwatch send: one input file at most ('%s' is extra)\n",
              argv[optind + 1]);
      return 2;
    }
    if (argc - optind == 1) path = argv[optind];
    return send_nats(nats_url, partitions, replicas, endpoint != NULL || acked || key_path != NULL, path,
                     &opts, timeout_ms);
  }
  if (endpoint == NULL) {
    fprintf(stderr, "tutorwatch send: --connect ENDPOINT is required\n\n");
    send_usage(stderr);
    return 2;
  }
  if (argc - optind > 1) {
    fprintf(stderr, "tutorwatch send: one input file at most ('%s' is extra)\n", argv[optind + 1]);
    return 2;
  }
  if (argc - optind == 1) path = argv[optind];
  if ((key_path == NULL) != (server_pub == NULL)) {
    fprintf(stderr, "tutorwatch send: --key and --server-pub go together\n");
    return 2;
  }
  char secret[TW_AUTH_Z85_LEN + 1], public_[TW_AUTH_Z85_LEN + 1], server[TW_AUTH_Z85_LEN + 1];
  tw_push_keys_t keys = {secret, public_, server};
  if (key_path != NULL) {
    int krc = tw_auth_read_secret(key_path, secret, public_);
    if (krc == 0) krc = tw_auth_read_public(server_pub, server);
    if (krc != 0) {
      fprintf(stderr, "tutorwatch send: cannot read the keys %s / %s: %s\n", key_path, server_pub,
              krc == TW_EIO ? strerror(errno) : "not a Z85 key file (see `tutorwatch keys gen`)");
      return 1;
    }
  }

  tw_push_stats_t st;
  double t0 = now_ms();
  int rc, err;
  if (acked) {
    /* Records are bounded as the engine bounds them: an over-long one is sent cut, to be
     * dead-lettered, so a batch in memory stays bounded too. */
    opts.max_record_bytes = 0;
    tw_acked_stats_t as;
    rc = tw_push_acked(path, &opts, endpoint, timeout_ms, key_path ? &keys : NULL, batch, window,
                       &as);
    err = errno;
    if (rc == 0 || as.records > 0)
      fprintf(stderr,
              "sent %llu events (%llu bytes) to %s in %.0f ms; %llu batches acknowledged, %llu "
              "sent again\n",
              (unsigned long long)as.records, (unsigned long long)as.bytes, endpoint, now_ms() - t0,
              (unsigned long long)as.batches, (unsigned long long)as.resent);
    st.records = as.records;
    goto status;
  }
  rc = tw_push_file_keyed(path, &opts, endpoint, timeout_ms, key_path ? &keys : NULL, &st);
  err = errno;
  double elapsed_ms = now_ms() - t0;
  if (rc == 0 || st.records > 0) {
    fprintf(stderr, "sent %llu events (%llu bytes) to %s in %.0f ms",
            (unsigned long long)st.records, (unsigned long long)st.bytes, endpoint, elapsed_ms);
    if (st.flagged > 0)
      fprintf(stderr, "; %llu of them truncated or broken (the engine dead-letters them)",
              (unsigned long long)st.flagged);
    fputc('\n', stderr);
  }
status:
  switch (rc) {
    case 0:
      return 0;
    case TW_ENOENT:
      fprintf(stderr, "tutorwatch send: %s: no such file\n", path);
      return 1;
    case TW_EIO:
      fprintf(stderr, "tutorwatch send: %s: cannot read: %s\n", path, strerror(err));
      return 1;
    case TW_EZMQ:
      if (err == EAGAIN)
        fprintf(stderr,
                "tutorwatch send: no engine took events at %s within %d ms "
                "(is `tutorwatch run` listening there?)\n",
                endpoint, timeout_ms);
      else
        fprintf(stderr, "tutorwatch send: %s: %s%s\n", endpoint, zmq_strerror(err),
                strstr(endpoint, "://") == NULL ? " (an endpoint looks like tcp://127.0.0.1:7600)"
                                                : "");
      return 1;
    case TW_ENOMEM:
      fprintf(stderr, "tutorwatch send: out of memory\n");
      return 70;
    default:
      fprintf(stderr, "tutorwatch send: %s\n", tw_strerror(rc));
      return 1;
  }
}
