/*
 * cmd_test.c: `tutorwatch test`: run the tests written in rule files (their `tests:` section).
 *
 * Each file is first compiled as `check` compiles it (a file that does not load is reported as
 * check reports it and fails); then its tests are read, every rule they name is checked against
 * the compiled rules, and each test runs on its own temporary state (engine/tw_ruletest.h). One
 * line per test, `ok   FILE: NAME` or `FAIL FILE: NAME` followed by the diff, then a summary.
 * Work is bounded by the rule loader's limits and the runner's (TW_RULETEST_MAX_*).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tw_cli.h"
#include "tw_error.h"
#include "tw_rules.h"
#include "tw_ruletest.h"
#include "tw_schema.h"


static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch test [--schema FILE] RULES.yaml...\n"
      "\n"
      "Run the tests in the `tests:` section of each rule file: each test feeds its given\n"
      "events through the engine on a fresh temporary state (never a live one), advances\n"
      "event time to its `at`, and compares the alerts with its `expect` and `expect_none`.\n"
      "Prints `ok   FILE: NAME` or `FAIL FILE: NAME` per test; a failure is followed by a diff:\n"
      "`- expected {...}` for an expectation no alert met, `+ unexpected {...}` for an alert\n"
      "no expectation accounts for, `! ...` for a given event the engine rejected. The format\n"
      "is in docs/rules.md (\"Rule tests\").\n"
      "\n"
      "  --schema FILE   the event schema (default: schema.yaml beside each rule file, else\n"
      "                  the shipped rules/packs/schema.yaml)\n"
      "  -h, --help      show this help\n"
      "\n"
      "Exit status: 0 every test passed, 1 a test failed or a file does not load, 2 usage\n"
      "error, 70 internal failure (state store, out of memory).\n");
}

static void print_error(const char *path, const tw_rule_error_t *err, int rc) {
  const char *file = err->file[0] ? err->file : path;
  if (err->line > 0) {
    fprintf(stderr, "%s:%d:%d: %s\n", file, err->line, err->col > 0 ? err->col : 1, err->message);
    tw_cli_show_caret(file, err->line, err->col > 0 ? err->col : 1);
  } else {
    fprintf(stderr, "%s: %s\n", file, err->message[0] ? err->message : tw_strerror(rc));
  }
}

typedef struct totals {
  size_t passed, failed, bad_files;
  int internal; /* an engine failure: exit 70 */
} totals_t;

static void test_file(const char *path, const char *schema_opt, totals_t *tot) {
  char schema_path[4096];
  tw_schema_t *schema = NULL;
  tw_ruleset_t *rs = NULL;
  tw_ruletest_suite_t *suite = NULL;
  tw_rule_error_t err;
  memset(&err, 0, sizeof err);
  int rc;
  if (schema_opt != NULL) {
    snprintf(schema_path, sizeof schema_path, "%s", schema_opt);
  } else if (tw_schema_path_for_rules(path, schema_path, sizeof schema_path) != 0) {
    fprintf(stderr, "%s: path too long\n", path);
    tot->bad_files++;
    return;
  }
  tw_schema_error_t serr;
  memset(&serr, 0, sizeof serr);
  if (tw_schema_load(schema_path, &schema, &serr) != 0) {
    const char *file = serr.file[0] ? serr.file : schema_path;
    fprintf(stderr, "%s:%d:%d: %s\n", file, serr.line, serr.col, serr.message);
    tw_cli_show_caret(file, serr.line, serr.col);
    tot->bad_files++;
    goto done;
  }
  rc = tw_rules_load(path, schema, &rs, &err);
  if (rc == 0) rc = tw_ruletest_load(path, NULL, 0, &suite, &err);
  if (rc == 0) rc = tw_ruletest_check_rules(suite, rs, &err);
  if (rc != 0) {
    print_error(path, &err, rc);
    tot->bad_files++;
    if (rc == TW_ENOMEM) tot->internal = 1;
    goto done;
  }
  size_t n = tw_ruletest_count(suite);
  if (n == 0) {
    printf("%s: no tests\n", path);
    goto done;
  }
  tw_ruletest_opts_t opts = {.schema_path = schema_path, .tmp_dir = NULL};
  for (size_t i = 0; i < n; i++) {
    tw_ruletest_report_t rep;
    rc = tw_ruletest_run(suite, i, &opts, &rep);
    printf("%s %s: %s\n", rep.passed ? "ok  " : "FAIL", path, tw_ruletest_name(suite, i));
    for (size_t k = 0; k < rep.n_lines; k++) printf("  %s\n", rep.lines[k]);
    if (rep.passed)
      tot->passed++;
    else
      tot->failed++;
    tw_ruletest_report_fini(&rep);
    if (rc == TW_ENOMEM || rc == TW_ESTATE || rc == TW_EIO) {
      fprintf(stderr, "tutorwatch test: %s: stopping: %s\n", path, tw_strerror(rc));
      tot->internal = 1;
      break;
    }
  }
  fflush(stdout);
done:
  tw_ruletest_free(suite);
  tw_rules_free(rs);
  tw_schema_free(schema);
}

int tw_cmd_test(int argc, char **argv) {
  static const struct option longopts[] = {{"schema", required_argument, NULL, 's'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *schema = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 's':
        schema = optarg;
        break;
      case 'h':
        usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch test --help' lists the options\n");
        return 2;
    }
  }
  if (optind == argc) {
    fprintf(stderr, "tutorwatch test: name at least one rule file\n");
    return 2;
  }
  totals_t tot = {0};
  for (int i = optind; i < argc && !tot.internal; i++) test_file(argv[i], schema, &tot);
  printf("%zu passed, %zu failed", tot.passed, tot.failed);
  if (tot.bad_files > 0)
    printf("; %zu %s not load", tot.bad_files, tot.bad_files == 1 ? "file does" : "files do");
  printf("\n");
  if (tot.internal) return 70;
  return tot.failed > 0 || tot.bad_files > 0 ? 1 : 0;
}
