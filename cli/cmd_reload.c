/*
 * cmd_reload.c: `tutorwatch reload`: make a serving engine load its rule file again.
 *
 * The engine serving a state directory writes its pid to DIR/engine.pid and, after each reload,
 * the outcome to DIR/reload.status ({"seq":N,"ok":true,"message":"..."}). This command sends it
 * SIGHUP and waits (bounded) for a newer status, then prints the engine's own message: which
 * aggregates kept their state, or the located error of a rule file it refused.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#include "tw_cli.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: tutorwatch reload --state DIR [--timeout-ms MS]\n"
          "\n"
          "Make the engine serving DIR (`tutorwatch run --listen ... --state DIR`) load its rule\n"
          "file again, as SIGHUP does, and print its answer: the aggregates that keep their state\n"
          "and those that start empty, or the error of a rule file it refused (the old rules then\n"
          "go on).\n"
          "\n"
          "  --state DIR       the serving engine's state directory\n"
          "  --timeout-ms MS   how long to wait for the answer (default 5000)\n"
          "  -h, --help        show this help\n"
          "\n"
          "Exit status: 0 reloaded, 1 refused, no engine serving DIR, or no answer in time,\n"
          "2 usage error.\n");
}

/* The seq of DIR/reload.status written by engine pid, 0 when absent or written by another (an
 * earlier) engine; *ok and msg set when present. */
static long long read_status(const char *dir, long pid, int *ok, char *msg, size_t cap) {
  char path[4200];
  snprintf(path, sizeof path, "%s/reload.status", dir);
  json_error_t err;
  json_t *o = json_load_file(path, 0, &err);
  if (o == NULL) return 0;
  long long seq = (long long)json_integer_value(json_object_get(o, "seq"));
  if ((long)json_integer_value(json_object_get(o, "pid")) != pid) seq = 0;
  *ok = json_is_true(json_object_get(o, "ok"));
  const char *m = json_string_value(json_object_get(o, "message"));
  snprintf(msg, cap, "%s", m ? m : "");
  json_decref(o);
  return seq;
}

int tw_cmd_reload(int argc, char **argv) {
  static const struct option longopts[] = {{"state", required_argument, NULL, 's'},
                                           {"timeout-ms", required_argument, NULL, 't'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *dir = NULL;
  long timeout_ms = 5000;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 's':
        dir = optarg;
        break;
      case 't': {
        char *end;
        timeout_ms = strtol(optarg, &end, 10);
        if (*end != '\0' || timeout_ms < 1 || timeout_ms > 3600000) {
          fprintf(stderr, "tutorwatch reload: --timeout-ms wants 1 to 3600000, not '%s'\n", optarg);
          return 2;
        }
        break;
      }
      case 'h':
        usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch reload --help' lists the options\n");
        return 2;
    }
  }
  if (dir == NULL || optind < argc) {
    fprintf(stderr,
            "tutorwatch reload: need --state DIR\n'tutorwatch reload --help' lists the options\n");
    return 2;
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/engine.pid", dir);
  FILE *f = fopen(path, "r");
  long pid = 0;
  if (f == NULL || fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
    if (f != NULL) fclose(f);
    fprintf(stderr, "tutorwatch reload: no engine is serving '%s' (no %s)\n", dir, path);
    return 1;
  }
  /* A serving engine holds a lock on its pid file; if we can take it, the engine is gone and the
   * pid may belong to an unrelated process by now: signal nothing. */
  if (flock(fileno(f), LOCK_SH | LOCK_NB) == 0) {
    fclose(f);
    fprintf(stderr, "tutorwatch reload: no engine is serving '%s' (%s is stale)\n", dir, path);
    return 1;
  }
  fclose(f);
  int ok = 0;
  char msg[4096];
  long long before = read_status(dir, pid, &ok, msg, sizeof msg);
  if (kill((pid_t)pid, SIGHUP) != 0) {
    fprintf(stderr, "tutorwatch reload: engine %ld of '%s' is gone: %s\n", pid, dir,
            strerror(errno));
    return 1;
  }
  struct timespec step = {0, 20 * 1000000L};
  for (long waited = 0; waited < timeout_ms; waited += 20) {
    nanosleep(&step, NULL);
    if (read_status(dir, pid, &ok, msg, sizeof msg) > before) {
      if (ok) {
        printf("reloaded: %s\n", msg);
        return 0;
      }
      fprintf(stderr, "tutorwatch reload: refused, the old rules go on: %s\n", msg);
      return 1;
    }
  }
  fprintf(stderr, "tutorwatch reload: engine %ld did not answer within %ld ms\n", pid, timeout_ms);
  return 1;
}
