/*
 * cmd_gen.c: `tutorwatch gen`, the synthetic event stream with ground truth (bench/tw_gen.h).
 *
 * Parses options (each "--name value" or "--name=value"), opens the outputs, runs the generator
 * and prints a one-line summary to stderr. stdout carries nothing but events, and only when the
 * events go there. Exit 0 success, 1 an output cannot be opened or written, 2 usage error,
 * 70 out of memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tw_cli.h"
#include "tw_error.h"
#include "tw_gen.h"

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch gen --institutions N --days D [--seed S] [--start YYYY-MM-DD]\n"
      "                      [--format jsonl|msgpack] [--out FILE|-] [--truth FILE]\n"
      "\n"
      "Writes a realistic synthetic stream of tutoring-institution events (payment, refund,\n"
      "consumption, enrollment, complaint, institution, escrow, staff), sorted by event time,\n"
      "with injected problem institutions whose ground truth can be written to a file.\n"
      "\n"
      "options:\n"
      "  --institutions N  institutions to simulate, 1..%u (required)\n"
      "  --days D          days to simulate, 1..%u (required)\n"
      "  --seed S          PRNG seed, an unsigned 64-bit integer (default 1); the same\n"
      "                    arguments and seed give byte-identical output\n"
      "  --start DATE      first day, YYYY-MM-DD, China Standard Time (default 2025-03-01)\n"
      "  --format F        jsonl (one JSON object per line) or msgpack (one map per event);\n"
      "                    default: msgpack when --out ends in .msgpack, else jsonl\n"
      "  --out FILE        where events go; '-' is stdout (default)\n"
      "  --truth FILE      write one JSON line per injected scenario institution ('-' is\n"
      "                    stdout, when --out names a file): {\"institution_id\",\"region\",\n"
      "                    \"scenario\",\"family\",\"onset\",\"collapse\"} (tutorwatch eval\n"
      "                    scores alerts against it)\n"
      "  -h, --help        show this help\n"
      "\n"
      "Healthy institutions (about 98%%) keep the rules: 10-80 students each, enrolment\n"
      "seasons (February, July-September), weekly lessons confirmed by parents (a few by\n"
      "timeout), payments of at most 5,000 yuan, 60 class hours and 90 service days into the\n"
      "supervised account (10%% pay after class), escrow deposits and evening releases,\n"
      "rare refunds paid within days, rare mild complaints, checked hires, some branches;\n"
      "they never close.\n"
      "\n"
      "Injected scenarios (about 2%% of institutions, at least one of each kind, each starting\n"
      "on a day in the middle third of the period), with the rule family each should raise:\n"
      "  over_cap, split_orders, training_loan          collection_caps\n"
      "  unsupervised, release_ahead, escrow_drain      supervised_account\n"
      "  collection_surge, deep_discount                collection_behaviour\n"
      "  classes_stop, timeout_confirm                  delivery\n"
      "  refund_backlog                                 refunds\n"
      "  complaint_storm, staff_exodus,\n"
      "  unchecked_teacher                              complaints_staff\n"
      "  closure_with_balance, branch_closures          closures\n"
      "  runaway (discount surge, lessons thin out, wage arrears, refund backlog, complaint\n"
      "          storm, closure: a phase a week)        runaway\n"
      "  seasonal_surge, planned_closure                healthy look-alikes\n"
      "docs/gen.md describes each.\n"
      "\n"
      "A one-line summary (events by type, problems injected) goes to stderr.\n",
      TW_GEN_MAX_INSTITUTIONS, TW_GEN_MAX_DAYS);
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "tutorwatch gen: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n'tutorwatch gen --help' lists the options.\n");
  return 2;
}

/* parse_u64: a decimal integer in [min, max], nothing else. 0 or -1. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9') return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max) return -1;
  *out = v;
  return 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

int tw_cmd_gen(int argc, char **argv) {
  tw_gen_opts_t opts;
  tw_gen_stats_t stats;
  const char *out_path = "-", *truth_path = NULL, *format = NULL;
  int have_n = 0, have_d = 0, status = 0;
  FILE *out = NULL, *truth = NULL;
  static char out_buf[1 << 20];

  tw_gen_opts_default(&opts);
  for (int k = 1; k < argc; k++) {
    const char *arg = argv[k];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    static const char *const kNames[] = {"--institutions", "--days", "--seed", "--start",
                                         "--format",       "--out",  "--truth"};
    const char *value = NULL;
    int which = -1;
    for (int o = 0; o < 7 && which < 0; o++) {
      size_t len = strlen(kNames[o]);
      if (strncmp(arg, kNames[o], len) != 0) continue;
      if (arg[len] == '=') {
        which = o;
        value = arg + len + 1;
      } else if (arg[len] == '\0') {
        which = o;
        if (k + 1 >= argc) return usage_error("option %s needs a value", arg);
        value = argv[++k];
      }
    }
    if (which < 0) return usage_error("unknown option '%s'", arg);
    uint64_t v = 0;
    switch (which) {
      case 0:
        if (parse_u64(value, 1, TW_GEN_MAX_INSTITUTIONS, &v) < 0)
          return usage_error("--institutions wants an integer from 1 to 200000, not '%s'", value);
        opts.institutions = (uint32_t)v;
        have_n = 1;
        break;
      case 1:
        if (parse_u64(value, 1, TW_GEN_MAX_DAYS, &v) < 0)
          return usage_error("--days wants an integer from 1 to 3660, not '%s'", value);
        opts.days = (uint32_t)v;
        have_d = 1;
        break;
      case 2:
        if (parse_u64(value, 0, UINT64_MAX, &v) < 0)
          return usage_error("--seed wants an unsigned 64-bit integer, not '%s'", value);
        opts.seed = v;
        break;
      case 3:
        if (tw_gen_parse_date(value, &opts.start_day) < 0)
          return usage_error("--start wants a date YYYY-MM-DD (1970 or later), not '%s'", value);
        break;
      case 4:
        if (strcmp(value, "jsonl") != 0 && strcmp(value, "msgpack") != 0)
          return usage_error("--format wants jsonl or msgpack, not '%s'", value);
        format = value;
        break;
      case 5:
        if (*value == '\0') return usage_error("--out wants a file name or '-'%s", "");
        out_path = value;
        break;
      default:
        if (*value == '\0') return usage_error("--truth wants a file name%s", "");
        truth_path = value;
        break;
    }
  }
  if (!have_n) return usage_error("--institutions N is required%s", "");
  if (!have_d) return usage_error("--days D is required%s", "");
  if (truth_path != NULL && strcmp(truth_path, "-") == 0 && strcmp(out_path, "-") == 0)
    return usage_error("--truth - needs --out FILE: events already go to stdout%s", "");
  if (format != NULL)
    opts.format = strcmp(format, "msgpack") == 0 ? TW_GEN_MSGPACK : TW_GEN_JSONL;
  else
    opts.format = ends_with(out_path, ".msgpack") ? TW_GEN_MSGPACK : TW_GEN_JSONL;

  if (strcmp(out_path, "-") == 0) {
    out = stdout;
  } else if ((out = fopen(out_path, "wb")) == NULL) {
    fprintf(stderr, "tutorwatch gen: cannot open %s: %s\n", out_path, strerror(errno));
    status = 1;
    goto fail;
  }
  setvbuf(out, out_buf, _IOFBF, sizeof out_buf);
  if (truth_path != NULL && strcmp(truth_path, "-") == 0) {
    truth = stdout;
  } else if (truth_path != NULL && (truth = fopen(truth_path, "w")) == NULL) {
    fprintf(stderr, "tutorwatch gen: cannot open %s: %s\n", truth_path, strerror(errno));
    status = 1;
    goto fail;
  }

  int rc = tw_gen_run(&opts, out, truth, &stats);
  if (rc == 0 && fflush(out) != 0) rc = TW_EIO;
  if (rc == 0 && truth != NULL && fflush(truth) != 0) rc = TW_EIO;
  if (rc < 0) {
    fprintf(stderr, "tutorwatch gen: %s\n", tw_strerror(rc));
    status = rc == TW_ENOMEM ? 70 : 1;
    goto fail;
  }
  fprintf(stderr, "tutorwatch gen: %" PRIu64 " events (", stats.events);
  for (int t = 0; t < TW_GEN_TYPE_COUNT; t++)
    fprintf(stderr, "%s%s %" PRIu64, t ? ", " : "", tw_gen_type_name(t), stats.by_type[t]);
  fprintf(stderr, ") from %u institutions over %u days; problems injected:", opts.institutions,
          opts.days);
  for (int p = 0; p < TW_GEN_PROBLEM_COUNT; p++)
    fprintf(stderr, "%s %s %u", p ? "," : "", tw_gen_problem_name(p), stats.problems[p]);
  fprintf(stderr, "\n");

fail:
  if (out != NULL && out != stdout && fclose(out) != 0 && status == 0) status = 1;
  if (out == stdout && fflush(stdout) != 0 && status == 0) status = 1;
  if (truth != NULL && truth != stdout && fclose(truth) != 0 && status == 0) status = 1;
  return status;
}
