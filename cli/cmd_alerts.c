/*
 * cmd_alerts.c: `tutorwatch alerts`: the client of the engine's control endpoint (`run
 * --control`): list and show alerts with their lifecycle, acknowledge, assign, resolve, dismiss,
 * comment, and snooze a rule for an institution. One REQ request, one JSON reply (see
 * tw_lifecycle.h); prints the alerts or the changed alert as JSON lines.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "tw_auth.h"
#include "tw_cli.h"
#include "tw_error.h"
#include "tw_event.h"

#define ALERTS_REPLY_MAX (64 << 20)

static void alerts_usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch alerts --connect ENDPOINT [--key NAME.key --server-pub FILE.pub]\n"
      "                         [--timeout-ms MS] COMMAND ...\n"
      "\n"
      "Follow alerts up on a serving engine (`run --control ENDPOINT`). An alert is open,\n"
      "acknowledged, in_progress, resolved or dismissed; an open alert nobody acknowledges\n"
      "before its severity's deadline escalates to the region one level up.\n"
      "\n"
      "commands:\n"
      "  list [--state STATE] [--prefix REGION] [--max N]   alerts, one JSON line each\n"
      "  show ALERT_ID                                      one alert with its comments\n"
      "  ack ALERT_ID [--comment TEXT]                      open → acknowledged\n"
      "  assign ALERT_ID --to NAME [--comment TEXT]         → in_progress, with an assignee\n"
      "  resolve ALERT_ID [--comment TEXT]                  acknowledged|in_progress → resolved\n"
      "  dismiss ALERT_ID --reason TEXT                     → dismissed\n"
      "  comment ALERT_ID --text TEXT                       add a comment\n"
      "  snooze --rule RULE --institution CODE --until TIME|DURATION --reason TEXT\n"
      "                                   silence RULE for one institution until TIME\n"
      "                                   (RFC 3339) or for DURATION (90m, 2h, 3d): its\n"
      "                                   alerts are journaled but not pushed to the feeds\n"
      "\n"
      "With keys, a regulator acts on alerts of its region, an operator on all; each\n"
      "change is recorded, with the key's name, in the audit log (`tutorwatch audit`).\n"
      "\n"
      "Exit status: 0 done, 1 refused or no answer, 2 usage error.\n"
      "\n"
      "example:\n"
      "  tutorwatch alerts --connect tcp://127.0.0.1:7605 list --state open --prefix 4401\n");
}

static int usage_error(const char *msg, const char *arg) {
  fprintf(stderr, "tutorwatch alerts: ");
  fprintf(stderr, msg, arg);
  fprintf(stderr, "\n'tutorwatch alerts --help' lists the commands\n");
  return 2;
}

/* "2h" / "90m" / "3d" from now, or an RFC 3339 time; epoch ms in *out. */
static int parse_until(const char *s, int64_t *out) {
  if (tw_parse_rfc3339(s, strlen(s), out) == 0) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || errno != 0 || v <= 0 || v > 3660LL * 24 * 60) return -1;
  int64_t unit = strcmp(end, "s") == 0   ? 1000
                 : strcmp(end, "m") == 0 ? 60000
                 : strcmp(end, "h") == 0 ? 3600000
                 : strcmp(end, "d") == 0 ? 86400000
                                         : 0;
  if (unit == 0) return -1;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  *out = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + (int64_t)v * unit;
  return 0;
}

static int print_line(json_t *v) {
  char *s = json_dumps(v, JSON_COMPACT);
  if (s == NULL) return -1;
  int ok = puts(s) >= 0;
  free(s);
  return ok ? 0 : -1;
}

int tw_cmd_alerts(int argc, char **argv) {
  static const struct option kGlobal[] = {{"connect", required_argument, NULL, 'c'},
                                          {"key", required_argument, NULL, 'k'},
                                          {"server-pub", required_argument, NULL, 'p'},
                                          {"timeout-ms", required_argument, NULL, 't'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
  static const struct option kSub[] = {{"state", required_argument, NULL, 's'},
                                       {"prefix", required_argument, NULL, 'P'},
                                       {"max", required_argument, NULL, 'm'},
                                       {"comment", required_argument, NULL, 'C'},
                                       {"to", required_argument, NULL, 'T'},
                                       {"reason", required_argument, NULL, 'R'},
                                       {"text", required_argument, NULL, 'X'},
                                       {"rule", required_argument, NULL, 'r'},
                                       {"institution", required_argument, NULL, 'i'},
                                       {"until", required_argument, NULL, 'u'},
                                       {NULL, 0, NULL, 0}};
  const char *endpoint = NULL, *key_path = NULL, *server_pub = NULL;
  int timeout_ms = 10000, ch;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, "+:h", kGlobal, NULL)) != -1) {
    switch (ch) {
      case 'c':
        endpoint = optarg;
        break;
      case 'k':
        key_path = optarg;
        break;
      case 'p':
        server_pub = optarg;
        break;
      case 't': {
        char *end;
        long v = strtol(optarg, &end, 10);
        if (*end != '\0' || v <= 0 || v > 3600000)
          return usage_error("bad --timeout-ms '%s'", optarg);
        timeout_ms = (int)v;
        break;
      }
      case 'h':
        alerts_usage(stdout);
        return 0;
      default:
        return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (endpoint == NULL) return usage_error("--connect ENDPOINT is required%s", "");
  if ((key_path == NULL) != (server_pub == NULL))
    return usage_error("--key and --server-pub go together%s", "");
  if (optind >= argc) return usage_error("which command? (list, show, ack, ...)%s", "");
  const char *cmd = argv[optind];
  int sub_argc = argc - optind;
  char **sub_argv = argv + optind;
  json_t *req = json_pack("{s:s}", "cmd", cmd);
  const char *id = NULL;
  int64_t until = 0;
  int have_until = 0;
  optind = 0; /* 0: glibc starts over, so options may follow the ALERT_ID (permuted) */
  while ((ch = getopt_long(sub_argc, sub_argv, ":", kSub, NULL)) != -1) {
    const char *field = NULL;
    switch (ch) {
      case 's':
        field = "state";
        break;
      case 'P':
        field = "prefix";
        break;
      case 'C':
        field = "comment";
        break;
      case 'R':
        field = "comment";
        break; /* a dismissal's reason is its comment */
      case 'X':
        field = "comment";
        break;
      case 'T':
        field = "assignee";
        break;
      case 'r':
        field = "rule";
        break;
      case 'i':
        field = "institution_id";
        break;
      case 'm': {
        char *end;
        long v = strtol(optarg, &end, 10);
        if (*end != '\0' || v <= 0 || v > 1000) {
          json_decref(req);
          return usage_error("--max wants 1 to 1000, not '%s'", optarg);
        }
        json_object_set_new(req, "max", json_integer(v));
        break;
      }
      case 'u':
        if (parse_until(optarg, &until) != 0) {
          json_decref(req);
          return usage_error("--until wants an RFC 3339 time or a duration (2h), not '%s'", optarg);
        }
        have_until = 1;
        break;
      default:
        json_decref(req);
        return usage_error("unknown or incomplete option '%s'", sub_argv[optind - 1]);
    }
    if (field != NULL) json_object_set_new(req, field, json_string(optarg));
  }
  if (optind < sub_argc) id = sub_argv[optind++];
  if (optind < sub_argc) {
    json_decref(req);
    return usage_error("unexpected argument '%s'", sub_argv[optind]);
  }
  int needs_id = strcmp(cmd, "list") != 0 && strcmp(cmd, "snooze") != 0;
  if (strcmp(cmd, "list") && strcmp(cmd, "show") && strcmp(cmd, "ack") && strcmp(cmd, "assign") &&
      strcmp(cmd, "resolve") && strcmp(cmd, "dismiss") && strcmp(cmd, "comment") &&
      strcmp(cmd, "snooze")) {
    json_decref(req);
    return usage_error("unknown command '%s'", cmd);
  }
  if (needs_id != (id != NULL)) {
    json_decref(req);
    return usage_error(needs_id ? "%s needs an ALERT_ID" : "%s takes no ALERT_ID", cmd);
  }
  if (id != NULL) json_object_set_new(req, "alert_id", json_string(id));
  if (strcmp(cmd, "snooze") == 0) {
    if (!have_until || json_object_get(req, "rule") == NULL ||
        json_object_get(req, "institution_id") == NULL || json_object_get(req, "comment") == NULL) {
      json_decref(req);
      return usage_error("snooze needs --rule, --institution, --until and --reason%s", "");
    }
    json_object_set_new(req, "until_ms", json_integer((json_int_t)until));
    json_object_set(req, "reason", json_object_get(req, "comment"));
    json_object_del(req, "comment");
  }

  char secret[TW_AUTH_Z85_LEN + 1], public_[TW_AUTH_Z85_LEN + 1], server[TW_AUTH_Z85_LEN + 1];
  if (key_path != NULL) {
    int krc = tw_auth_read_secret(key_path, secret, public_);
    if (krc == 0) krc = tw_auth_read_public(server_pub, server);
    if (krc != 0) {
      fprintf(stderr, "tutorwatch alerts: cannot read the keys %s / %s\n", key_path, server_pub);
      json_decref(req);
      return 1;
    }
  }
  int status = 1;
  char *s = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  void *ctx = zmq_ctx_new(), *sock = ctx ? zmq_socket(ctx, ZMQ_REQ) : NULL;
  int linger = 0;
  int64_t max_msg = ALERTS_REPLY_MAX;
  zmq_msg_t reply;
  zmq_msg_init(&reply);
  if (s == NULL || sock == NULL || zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
      zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
      zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
      zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
      (key_path != NULL && tw_auth_client_socket(sock, secret, public_, server) != 0) ||
      zmq_connect(sock, endpoint) != 0 || zmq_send(sock, s, strlen(s), 0) < 0 ||
      zmq_msg_recv(&reply, sock, 0) < 0) {
    fprintf(stderr, "tutorwatch alerts: %s: %s\n", endpoint,
            zmq_errno() == EAGAIN ? "no answer (is the engine serving --control there, and is the "
                                    "key admitted?)"
                                  : zmq_strerror(zmq_errno()));
    goto out;
  }
  json_error_t jerr;
  json_t *r = json_loadb(zmq_msg_data(&reply), zmq_msg_size(&reply), 0, &jerr);
  if (!json_is_true(json_object_get(r, "ok"))) {
    const char *e = json_string_value(json_object_get(r, "error"));
    fprintf(stderr, "tutorwatch alerts: %s: %s\n", cmd, e ? e : "malformed answer");
    json_decref(r);
    goto out;
  }
  status = 0;
  json_t *list = json_object_get(r, "alerts");
  if (json_is_array(list)) {
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) if (print_line(a) != 0) status = 1;
  } else {
    json_t *one = json_object_get(r, "alert");
    if (one == NULL) one = json_object_get(r, "snooze");
    if (one != NULL && print_line(one) != 0) status = 1;
  }
  if (fflush(stdout) != 0) status = 1;
  json_decref(r);
out:
  zmq_msg_close(&reply);
  free(s);
  if (sock != NULL) zmq_close(sock);
  if (ctx != NULL) zmq_ctx_term(ctx);
  return status;
}
