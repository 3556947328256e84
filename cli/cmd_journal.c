/*
 * cmd_journal.c: `tutorwatch journal`: print the committed alert journal of a state directory.
 *
 * Each journal record is printed as one JSON line with the record's sequence number spliced in
 * as the first key, `{"seq":12,"alert_id":...}`: the alert's own bytes follow unchanged, so a
 * line minus its `"seq":N,` prefix is byte-identical to what the sinks received. Lines come in
 * sequence order from one LMDB read transaction, so the output is a consistent snapshot even
 * while an engine commits to the same directory (see docs/crash-safety.md).
 *
 * The directory is checked before it is opened: tw_state_open would create a state that does not
 * exist, and a reader must never do that. Work is bounded by --count (or the journal's size);
 * memory is one line buffer of at most TW_STATE_JOURNAL_MAX + 32 bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tw_cli.h"
#include "tw_error.h"
#include "tw_state.h"

#define JOURNAL_SEQ_PREFIX_MAX 64 /* bytes of `{"shard":63,"seq":18446744073709551615,` */

static void journal_usage(FILE *out) {
  fprintf(out,
          "usage: tutorwatch journal --state DIR [--since SEQ] [--count N]\n"
          "\n"
          "Print the alert journal of a state directory: every alert the engine committed, in\n"
          "sequence order, one JSON line each, with its journal sequence number as the first "
          "key:\n"
          "  {\"seq\":12,\"alert_id\":\"...\",\"rule\":\"...\",...}\n"
          "The rest of each line is the alert exactly as the sinks received it.\n"
          "\n"
          "options:\n"
          "  --state DIR   the engine's state directory (required; it is not created)\n"
          "  --since SEQ   only alerts with a sequence number above SEQ (default 0: all)\n"
          "  --count N     stop after N alerts\n"
          "  -h, --help    show this help\n"
          "\n"
          "It may run while an engine serves on the same directory: it sees the alerts committed\n"
          "when it starts. A consumer that was away resumes with --since LAST_SEQ_SEEN.\n"
          "\n"
          "Exit status: 0 done (also when no alert matches), 1 no state in DIR or output error,\n"
          "2 usage error, 70 state store failure.\n"
          "\n"
          "example:\n"
          "  tutorwatch journal --state s --since 120 --count 10\n");
}

typedef struct journal_out {
  char *line;                  /* JOURNAL_SEQ_PREFIX_MAX + TW_STATE_JOURNAL_MAX bytes */
  uint64_t printed, count_max; /* count_max 0 = no limit */
  int write_failed;
  int shard; /* sharded state: the shard being printed; -1 otherwise */
} journal_out_t;

/* Splice `"seq":N,` after the record's opening brace; a record that is not a JSON object (never
 * written by the engine) is refused rather than printed as something it is not. */
static int print_record(void *ud, uint64_t seq, const char *json, size_t len) {
  journal_out_t *o = ud;
  if (len < 2 || json[0] != '{' || json[len - 1] != '}' || len > TW_STATE_JOURNAL_MAX) {
    fprintf(stderr, "tutorwatch journal: record %" PRIu64 " is not a JSON object; stopping\n", seq);
    return TW_ESTATE;
  }
  char shard[32] = "";
  if (o->shard >= 0) snprintf(shard, sizeof shard, "\"shard\":%d,", o->shard);
  int n = snprintf(o->line, JOURNAL_SEQ_PREFIX_MAX, "{%s\"seq\":%" PRIu64 "%s", shard, seq,
                   len == 2 ? "" : ",");
  memcpy(o->line + n, json + 1, len - 1);
  size_t total = (size_t)n + len - 1;
  o->line[total++] = '\n';
  if (fwrite(o->line, 1, total, stdout) != total) {
    o->write_failed = 1;
    return TW_EIO;
  }
  o->printed++;
  return o->count_max != 0 && o->printed >= o->count_max ? 1 : 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t *out) {
  char *end = NULL;
  if (s[0] < '0' || s[0] > '9') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min) return -1;
  *out = (uint64_t)v;
  return 0;
}

/* The directory must already hold an LMDB state, readable and writable by us (LMDB's lock file
 * needs write access even to read). Prints the reason and returns 1 when it does not. */
static int check_state_dir(const char *dir) {
  struct stat sb;
  char path[4096];
  if (stat(dir, &sb) != 0) {
    fprintf(stderr, "tutorwatch journal: no state directory '%s': %s\n", dir, strerror(errno));
    return 1;
  }
  if (!S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "tutorwatch journal: '%s' is not a directory\n", dir);
    return 1;
  }
  if (snprintf(path, sizeof path, "%s/data.mdb", dir) >= (int)sizeof path) {
    fprintf(stderr, "tutorwatch journal: state path too long\n");
    return 1;
  }
  if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
    fprintf(stderr,
            "tutorwatch journal: '%s' holds no tutorwatch state (no data.mdb); give the "
            "directory that `tutorwatch run --state` used\n",
            dir);
    return 1;
  }
  if (access(path, R_OK | W_OK) != 0) {
    fprintf(stderr, "tutorwatch journal: cannot open '%s': %s\n", path, strerror(errno));
    return 1;
  }
  return 0;
}

/* A closed standard descriptor would be reused by LMDB's open(2) of lock.mdb or data.mdb, and
 * output meant for stdout or stderr would then be written into the state. stdin and stderr are
 * pointed at /dev/null when closed; a closed stdout is an error, as there is nowhere to print. */
static int check_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) != -1) continue;
    if (fd == STDOUT_FILENO) {
      fprintf(stderr, "tutorwatch journal: standard output is closed\n");
      return 1;
    }
    int nfd = open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY);
    if (nfd != fd) {
      if (nfd >= 0) close(nfd);
      return 1;
    }
  }
  return 0;
}

int tw_cmd_journal(int argc, char **argv) {
  static const struct option longopts[] = {{"state", required_argument, NULL, 's'},
                                           {"since", required_argument, NULL, 'S'},
                                           {"count", required_argument, NULL, 'c'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *dir = NULL;
  journal_out_t o;
  memset(&o, 0, sizeof o);
  uint64_t since = 0;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 's':
        dir = optarg;
        break;
      case 'S':
        if (parse_u64(optarg, 0, &since) != 0) {
          fprintf(stderr,
                  "tutorwatch journal: --since wants a sequence number (0 or more), not '%s'\n",
                  optarg);
          return 2;
        }
        break;
      case 'c':
        if (parse_u64(optarg, 1, &o.count_max) != 0) {
          fprintf(stderr, "tutorwatch journal: --count wants a positive integer, not '%s'\n",
                  optarg);
          return 2;
        }
        break;
      case 'h':
        journal_usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch journal --help' lists the options\n");
        return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "tutorwatch journal: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (dir == NULL) {
    fprintf(stderr,
            "tutorwatch journal: need --state DIR\n"
            "'tutorwatch journal --help' lists the options\n");
    return 2;
  }
  if (check_std_fds() != 0) return 1;
  /* A state made with --shards N holds one environment per shard: print them in shard order,
   * each record tagged with its shard ("seq" counts within a shard; --since applies to each). */
  char shard_dir[4200];
  int n_shards = 0;
  for (;; n_shards++) {
    struct stat sb;
    snprintf(shard_dir, sizeof shard_dir, "%s/shard-%d/data.mdb", dir, n_shards);
    if (stat(shard_dir, &sb) != 0) break;
  }
  if (n_shards == 0 && check_state_dir(dir) != 0) return 1;

  int status = 0;
  tw_state_t *st = NULL;
  int rc = 0;
  o.line = malloc(JOURNAL_SEQ_PREFIX_MAX + TW_STATE_JOURNAL_MAX);
  if (o.line == NULL) {
    fprintf(stderr, "tutorwatch journal: %s\n", tw_strerror(TW_ENOMEM));
    return 70;
  }
  uint64_t last_seq = 0;
  for (int k = 0; k < (n_shards ? n_shards : 1) && rc == 0; k++) {
    const char *d = dir;
    o.shard = n_shards ? k : -1;
    if (n_shards) {
      snprintf(shard_dir, sizeof shard_dir, "%s/shard-%d", dir, k);
      d = shard_dir;
    }
    rc = tw_state_open(d, NULL, &st);
    if (rc != 0) {
      fprintf(stderr, "tutorwatch journal: cannot open state '%s': %s\n", d, tw_strerror(rc));
      status = rc == TW_EIO ? 1 : 70;
      goto done;
    }
    rc = tw_state_journal_foreach(st, since, print_record, &o);
    tw_state_stats_t ss;
    tw_state_stats(st, &ss);
    if (ss.journal_seq > last_seq) last_seq = ss.journal_seq;
    tw_state_close(st);
    st = NULL;
  }
  if (rc > 0) rc = 0; /* --count reached */
  if (rc == 0 && fflush(stdout) != 0) o.write_failed = 1;
  if (o.write_failed) {
    fprintf(stderr, "tutorwatch journal: cannot write the output: %s\n", strerror(errno));
    status = 1;
  } else if (rc != 0) {
    fprintf(stderr, "tutorwatch journal: cannot read the journal of '%s': %s\n", dir,
            tw_strerror(rc));
    status = 70;
  } else if (o.printed == 0) {
    fprintf(stderr,
            "tutorwatch journal: no alert after sequence %" PRIu64 " in '%s' (last is %" PRIu64
            ")\n",
            since, dir, last_seq);
  }
done:
  tw_state_close(st);
  free(o.line);
  return status;
}
