/*
 * main.c: the `tutorwatch` executable: dispatches to a subcommand from one table, git-style.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tw_cli.h"
#include "tw_event.h"

typedef struct command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} command_t;

int tw_cli_duration_ms(const char *s, int64_t *out_ms) {
  int64_t ms = 0;
  if (strcmp(s, "0") != 0 && (tw_duration_parse(s, strlen(s), &ms) != 0 || ms > INT64_MAX / 4))
    return -1;
  *out_ms = ms;
  return 0;
}

static const command_t kCommands[] = {
    {"run", tw_cmd_run, "evaluate rules over events from a file, stdin or ZeroMQ; write alerts"},
    {"gen", tw_cmd_gen, "generate a realistic synthetic event stream with injected problems"},
    {"send", tw_cmd_send, "push events from a file or stdin to a running engine (ZeroMQ PUSH)"},
    {"feed", tw_cmd_feed, "subscribe to the regulator feed and print alerts as JSON lines"},
    {"check", tw_cmd_check, "compile rule files and report errors with file:line:col and a caret"},
    {"test", tw_cmd_test, "run the tests written in rule files (given events, expected alerts)"},
    {"eval", tw_cmd_eval, "score alerts against a ground-truth file: recall, precision, lead time"},
    {"journal", tw_cmd_journal, "print the committed alert journal of a state directory"},
    {"reload", tw_cmd_reload, "make a serving engine load its rule file again (like SIGHUP)"},
    {"keys", tw_cmd_keys, "make a CURVE key pair for the engine or a feed client"},
    {"alerts", tw_cmd_alerts, "list, show, acknowledge, assign, resolve, dismiss, snooze alerts"},
    {"audit", tw_cmd_audit, "verify the hash-chained audit log of the alert lifecycle"},
    {"replay", tw_cmd_replay, "replay recorded events with any rules: alerts, explain, diff"},
    {"bench", tw_cmd_bench, "measure throughput by stage, latency and memory on this machine"},
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: tutorwatch <command> [options]\n"
          "\n"
          "tutorwatch watches payment, enrollment, complaint and related events of off-campus\n"
          "tutoring institutions and raises risk warnings (prepaid fees over the caps or outside\n"
          "the supervised account, complaint storms, closures with prepaid balances left...).\n"
          "\n"
          "commands:\n");
  for (size_t i = 0; i < sizeof kCommands / sizeof kCommands[0]; i++)
    fprintf(out, "  %-8s %s\n", kCommands[i].name, kCommands[i].summary);
  fprintf(out, "\n'tutorwatch <command> --help' describes a command's options.\n");
}

/* A command started with stdin, stdout or stderr closed would hand those descriptor numbers to
 * the first files it opens (LMDB's lock file, say) and then write alerts into them. */
static void keep_std_fds_open(void) {
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
      if (nfd >= 0 && nfd != fd) close(nfd); /* open() takes the lowest free number: fd */
    }
}

int main(int argc, char **argv) {
  keep_std_fds_open();
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("tutorwatch 0.1.0\n");
    return 0;
  }
  for (size_t i = 0; i < sizeof kCommands / sizeof kCommands[0]; i++)
    if (strcmp(argv[1], kCommands[i].name) == 0) return kCommands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "tutorwatch: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
