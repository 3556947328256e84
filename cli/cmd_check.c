/*
 * cmd_check.c: `tutorwatch check`: compile rule files as `run` would and report every problem
 * with its location, the source line and a caret under the column, like a compiler.
 *
 * Each file is loaded with the schema that goes with it (schema.yaml beside it, or --schema) and
 * the --set overrides, in the loader's diagnostics mode: every error (the loader goes on with
 * the next param, list, macro, aggregate or rule) and every lint warning (unused names, risky
 * regexes, rules on alerts) is printed in file order as FILE:LINE:COL: error|warning: message,
 * then a summary line per file. Nothing is evaluated and no state is touched. Work per file is
 * bounded by the rule loader's own limits (file size, list sizes, nesting, 1000 diagnostics).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tw_cli.h"
#include "tw_error.h"
#include "tw_rules.h"
#include "tw_schema.h"


static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch check [--schema FILE] [--set NAME=VALUE]... RULES.yaml...\n"
      "\n"
      "Compile each rule file exactly as `tutorwatch run` would: YAML structure, names of\n"
      "fields, params, lists, macros and aggregates (with suggestions), types, keys, regexes,\n"
      "durations and money; and lint it: unused params, lists, macros and aggregates, regexes\n"
      "that can backtrack catastrophically, rules on alerts. Every problem is printed as\n"
      "FILE:LINE:COL: error: message (or warning:), then the line and a caret; then one\n"
      "summary line per file.\n"
      "\n"
      "  --schema FILE      the event schema (default: schema.yaml beside each rule file,\n"
      "                     else the shipped rules/packs/schema.yaml)\n"
      "  --set NAME=VALUE   override a param, as `run --set` does (repeatable)\n"
      "  -h, --help         show this help\n"
      "\n"
      "Exit status: 0 every file compiles (warnings allowed), 1 at least one error, 2 usage.\n");
}

#define CHECK_MAX_SET 64 /* --set options */

typedef struct counts {
  int errors, warnings;
} counts_t;

static void print_diag(void *ud, const tw_rule_error_t *d, bool warning) {
  counts_t *c = ud;
  const char *kind = warning ? "warning" : "error";
  if (warning)
    c->warnings++;
  else
    c->errors++;
  if (d->line > 0) {
    fprintf(stderr, "%s:%d:%d: %s: %s\n", d->file, d->line, d->col, kind, d->message);
    tw_cli_show_caret(d->file, d->line, d->col);
  } else {
    fprintf(stderr, "%s: %s: %s\n", d->file, kind, d->message);
  }
}

static int check_file(const char *path, const char *schema_opt, const char *const *set,
                      size_t n_set) {
  char schema_path[4096];
  tw_schema_t *schema = NULL;
  tw_ruleset_t *rs = NULL;
  int ok = 0;
  if (schema_opt != NULL) {
    snprintf(schema_path, sizeof schema_path, "%s", schema_opt);
  } else if (tw_schema_path_for_rules(path, schema_path, sizeof schema_path) != 0) {
    fprintf(stderr, "%s: error: path too long\n", path);
    return 0;
  }
  tw_schema_error_t serr;
  memset(&serr, 0, sizeof serr);
  if (tw_schema_load(schema_path, &schema, &serr) != 0) {
    fprintf(stderr, "%s:%d:%d: error: %s\n", serr.file[0] ? serr.file : schema_path, serr.line,
            serr.col, serr.message);
    tw_cli_show_caret(serr.file[0] ? serr.file : schema_path, serr.line, serr.col);
    printf("%s: schema %s does not load\n", path, schema_path);
    goto done;
  }
  counts_t c = {0, 0};
  tw_rules_load_opts_t opts = {set, n_set, print_diag, &c};
  tw_rule_error_t err;
  memset(&err, 0, sizeof err);
  int rc = tw_rules_load_ex(path, NULL, 0, schema, &opts, &rs, &err);
  if (rc != 0) {
    if (c.errors == 0) print_diag(&c, &err, false); /* not reached: every error is reported */
    printf("%s: %d error%s, %d warning%s\n", path, c.errors, c.errors == 1 ? "" : "s", c.warnings,
           c.warnings == 1 ? "" : "s");
    goto done;
  }
  size_t na = tw_rules_n_aggregates(rs), nr = tw_rules_n_rules(rs);
  printf("%s: ok (%zu %s, %zu %s, %d warning%s, schema %s, sha256 %.12s)\n", path, na,
         na == 1 ? "aggregate" : "aggregates", nr, nr == 1 ? "rule" : "rules", c.warnings,
         c.warnings == 1 ? "" : "s", schema_path, tw_rules_hash(rs));
  ok = 1;
done:
  tw_rules_free(rs);
  tw_schema_free(schema);
  return ok;
}

int tw_cmd_check(int argc, char **argv) {
  static const struct option longopts[] = {{"schema", required_argument, NULL, 's'},
                                           {"set", required_argument, NULL, 'S'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *schema = NULL;
  const char *set[CHECK_MAX_SET];
  size_t n_set = 0;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 's':
        schema = optarg;
        break;
      case 'S':
        if (n_set == CHECK_MAX_SET) {
          fprintf(stderr, "tutorwatch check: at most %d --set options\n", CHECK_MAX_SET);
          return 2;
        }
        set[n_set++] = optarg;
        break;
      case 'h':
        usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch check --help' lists the options\n");
        return 2;
    }
  }
  if (optind == argc) {
    fprintf(stderr, "tutorwatch check: name at least one rule file\n");
    return 2;
  }
  int failed = 0;
  for (int i = optind; i < argc; i++) failed += !check_file(argv[i], schema, set, n_set);
  return failed ? 1 : 0;
}
