/*
 * cmd_eval.c: `tutorwatch eval`, detection quality of alerts against a ground-truth file.
 *
 * Reads the truth (`tutorwatch gen --truth`: one JSON line per scenario institution with
 * institution_id, scenario, family, onset, collapse) and the alerts (`tutorwatch run --alerts`),
 * takes each alert's family from the `family` label of its rule in the rule file, and scores:
 * recall (scenarios with an alert of their family at or after onset), precision (alerts on a
 * scenario institution at or after its onset, over all alerts), false alerts per 1,000
 * institution-days, and lead time (collapse minus the first alert of the scenario's family) as
 * median and 10th percentile, per scenario and overall. docs/detection.md defines each figure.
 *
 * Bounds: lines of at most 64 KiB (longer ones are an error naming the line), at most
 * EVAL_MAX_TRUTH truth lines and EVAL_MAX_SCENARIOS distinct scenario names; the alerts are
 * streamed, so their number costs no memory. Memory is O(truth lines).
 * Exit 0 success, 1 an input that cannot be read or parsed, 2 usage error, 70 out of memory.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tw_cli.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_rules.h"
#include "tw_schema.h"

#define EVAL_MAX_LINE 65536
#define EVAL_MAX_TRUTH 1000000u
#define EVAL_MAX_SCENARIOS 256u
#define EVAL_MAX_NAME 128 /* ids, rule names (<= 64 bytes), scenario and family names */
#define MS_PER_DAY 86400000.0

typedef struct eval_inst {
  int scenario; /* index into eval_t.scen */
  int healthy;  /* family "healthy": every alert on it is false */
  char family[EVAL_MAX_NAME];
  int64_t onset_ms;
  int64_t collapse_ms;  /* -1: none */
  int64_t first_hit_ms; /* first alert of its family at or after onset; -1: none */
} eval_inst_t;

typedef struct eval_scen {
  char name[EVAL_MAX_NAME], family[EVAL_MAX_NAME];
  uint64_t n, detected, alerts, true_alerts;
} eval_scen_t;

typedef struct eval {
  eval_inst_t *inst;
  size_t n_inst;
  json_t *by_id; /* institution_id -> index into inst */
  eval_scen_t scen[EVAL_MAX_SCENARIOS];
  size_t n_scen;
  tw_ruleset_t *rules;
  uint64_t alerts, true_alerts, unknown_rule_alerts;
} eval_t;

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch eval --truth FILE --alerts FILE [--rules FILE] [--json FILE]\n"
      "                       [--institutions N --days D]\n"
      "\n"
      "Scores alerts (tutorwatch run --alerts) against a ground-truth file (tutorwatch gen\n"
      "--truth) and prints, per scenario and overall: recall, precision, false alerts per\n"
      "1,000 institution-days and lead time before the collapse (median, 10th percentile).\n"
      "\n"
      "options:\n"
      "  --truth FILE        JSON lines {institution_id, scenario, family, onset, collapse}\n"
      "  --alerts FILE       alert JSON lines, as tutorwatch run writes them\n"
      "  --rules FILE        the rule file that raised them; each rule's 'family' label is the\n"
      "                      family of its alerts (default: the shipped\n"
      "                      rules/packs/default.yaml)\n"
      "  --json FILE         also write the figures as JSON ('-' is stdout)\n"
      "  --institutions N    institutions in the stream and --days D days in it, for the\n"
      "  --days D            false alerts per 1,000 institution-days (null without them)\n"
      "  -h, --help          show this help\n"
      "\n"
      "An alert is true when its institution is a scenario institution (not a healthy\n"
      "look-alike) and its event time is at or after the scenario's onset; every other alert\n"
      "is false. A scenario is found when an alert of its family comes at or after onset.\n"
      "Lead time is the collapse minus the first such alert, in days. docs/detection.md has\n"
      "the details.\n");
}

static int usage_error(const char *msg, const char *arg) {
  fprintf(stderr, "tutorwatch eval: %s%s\n'tutorwatch eval --help' lists the options.\n", msg, arg);
  return 2;
}

static int parse_count(const char *s, uint64_t max, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9') return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 1 || v > max) return -1;
  *out = v;
  return 0;
}

/* copy_name: a string member of o into out (EVAL_MAX_NAME); -1 when absent, not a string, empty
 * or too long. */
static int copy_name(const json_t *o, const char *key, char *out) {
  const json_t *v = json_object_get(o, key);
  if (!json_is_string(v)) return -1;
  size_t len = json_string_length(v);
  if (len == 0 || len >= EVAL_MAX_NAME) return -1;
  memcpy(out, json_string_value(v), len + 1);
  return 0;
}

static int get_time(const json_t *o, const char *key, int64_t *out) {
  const json_t *v = json_object_get(o, key);
  if (!json_is_string(v)) return -1;
  return tw_parse_rfc3339(json_string_value(v), json_string_length(v), out) == 0 ? 0 : -1;
}

/* read_line: the next line of f into *buf (without its newline). 1 a line, 0 end of file,
 * -1 a line over EVAL_MAX_LINE, -2 a read error. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *len) {
  errno = 0;
  ssize_t n = getline(buf, cap, f);
  if (n < 0) return ferror(f) ? -2 : 0;
  if ((size_t)n > EVAL_MAX_LINE) return -1;
  if (n > 0 && (*buf)[n - 1] == '\n') (*buf)[--n] = '\0';
  *len = (size_t)n;
  return 1;
}

static int scenario_index(eval_t *ev, const char *name, const char *family) {
  for (size_t k = 0; k < ev->n_scen; k++)
    if (strcmp(ev->scen[k].name, name) == 0) return (int)k;
  if (ev->n_scen == EVAL_MAX_SCENARIOS) return -1;
  eval_scen_t *s = &ev->scen[ev->n_scen];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  snprintf(s->family, sizeof s->family, "%s", family);
  return (int)ev->n_scen++;
}

/* load_truth: 0, 1 (bad input, reported), 70 (out of memory). */
static int load_truth(eval_t *ev, const char *path) {
  FILE *f = fopen(path, "r");
  char *buf = NULL;
  size_t cap = 0, len = 0, alloc = 0;
  unsigned long line = 0;
  int status = 0, r;
  if (f == NULL) {
    fprintf(stderr, "tutorwatch eval: cannot open %s: %s\n", path, strerror(errno));
    return 1;
  }
  while ((r = read_line(f, &buf, &cap, &len)) == 1) {
    line++;
    if (len == 0) continue;
    json_error_t jerr;
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    eval_inst_t in;
    char id[EVAL_MAX_NAME], scen[EVAL_MAX_NAME];
    memset(&in, 0, sizeof in);
    in.collapse_ms = in.first_hit_ms = -1;
    const json_t *collapse = o ? json_object_get(o, "collapse") : NULL;
    if (o == NULL || !json_is_object(o) || copy_name(o, "institution_id", id) < 0 ||
        copy_name(o, "scenario", scen) < 0 || copy_name(o, "family", in.family) < 0 ||
        get_time(o, "onset", &in.onset_ms) < 0 ||
        (collapse != NULL && !json_is_null(collapse) &&
         get_time(o, "collapse", &in.collapse_ms) < 0)) {
      fprintf(stderr,
              "tutorwatch eval: %s:%lu: not a truth line (want institution_id, scenario, family, "
              "onset as RFC 3339, collapse as RFC 3339 or null)\n",
              path, line);
      json_decref(o);
      status = 1;
      goto done;
    }
    json_decref(o);
    if (json_object_get(ev->by_id, id) != NULL) {
      fprintf(stderr, "tutorwatch eval: %s:%lu: institution %s is listed twice\n", path, line, id);
      status = 1;
      goto done;
    }
    if (ev->n_inst == EVAL_MAX_TRUTH) {
      fprintf(stderr, "tutorwatch eval: %s:%lu: more than %u truth lines\n", path, line,
              EVAL_MAX_TRUTH);
      status = 1;
      goto done;
    }
    in.scenario = scenario_index(ev, scen, in.family);
    if (in.scenario < 0) {
      fprintf(stderr, "tutorwatch eval: %s:%lu: more than %u scenario names\n", path, line,
              EVAL_MAX_SCENARIOS);
      status = 1;
      goto done;
    }
    in.healthy = strcmp(in.family, "healthy") == 0;
    if (ev->n_inst == alloc) {
      size_t grown = alloc ? alloc * 2 : 256;
      eval_inst_t *p = realloc(ev->inst, grown * sizeof *p);
      if (p == NULL) {
        status = 70;
        goto done;
      }
      ev->inst = p;
      alloc = grown;
    }
    json_t *idx = json_integer((json_int_t)ev->n_inst);
    if (idx == NULL || json_object_set_new(ev->by_id, id, idx) != 0) {
      status = 70;
      goto done;
    }
    ev->inst[ev->n_inst++] = in;
    ev->scen[in.scenario].n++;
  }
  if (r == -1) {
    fprintf(stderr, "tutorwatch eval: %s:%lu: line longer than %d bytes\n", path, line + 1,
            EVAL_MAX_LINE);
    status = 1;
  } else if (r == -2) {
    fprintf(stderr, "tutorwatch eval: cannot read %s: %s\n", path, strerror(errno));
    status = 1;
  }
done:
  free(buf);
  fclose(f);
  return status;
}

/* rule_family: the `family` label of the named rule; NULL when the rule is not in the file or
 * has no such label. */
static const char *rule_family(const eval_t *ev, const char *rule) {
  for (size_t k = 0; k < tw_rules_n_rules(ev->rules); k++) {
    const tw_rule_t *r = tw_rules_rule(ev->rules, k);
    if (strcmp(r->name, rule) != 0) continue;
    for (size_t l = 0; l < r->n_labels; l++)
      if (strcmp(r->labels[l].key, "family") == 0) return r->labels[l].value;
    return NULL;
  }
  return NULL;
}

/* score_alerts: 0, or 1 (bad input, reported). */
static int score_alerts(eval_t *ev, const char *path) {
  FILE *f = fopen(path, "r");
  char *buf = NULL;
  size_t cap = 0, len = 0;
  unsigned long line = 0;
  int status = 0, r;
  if (f == NULL) {
    fprintf(stderr, "tutorwatch eval: cannot open %s: %s\n", path, strerror(errno));
    return 1;
  }
  while ((r = read_line(f, &buf, &cap, &len)) == 1) {
    line++;
    if (len == 0) continue;
    json_error_t jerr;
    json_t *o = json_loadb(buf, len, 0, &jerr);
    char id[EVAL_MAX_NAME], rule[EVAL_MAX_NAME];
    int64_t at = 0;
    if (o == NULL || !json_is_object(o) || copy_name(o, "institution_id", id) < 0 ||
        copy_name(o, "rule", rule) < 0 || get_time(o, "event_time", &at) < 0) {
      fprintf(stderr,
              "tutorwatch eval: %s:%lu: not an alert (want institution_id, rule, event_time)\n",
              path, line);
      json_decref(o);
      status = 1;
      break;
    }
    json_t *idx = json_object_get(ev->by_id, id);
    json_decref(o);
    const char *family = rule_family(ev, rule);
    ev->alerts++;
    if (family == NULL) ev->unknown_rule_alerts++;
    if (idx == NULL) continue; /* an institution with no scenario: a false alert */
    eval_inst_t *in = &ev->inst[json_integer_value(idx)];
    eval_scen_t *sc = &ev->scen[in->scenario];
    sc->alerts++;
    if (in->healthy || at < in->onset_ms) continue;
    sc->true_alerts++;
    ev->true_alerts++;
    if (family != NULL && strcmp(family, in->family) == 0 &&
        (in->first_hit_ms < 0 || at < in->first_hit_ms))
      in->first_hit_ms = at;
  }
  if (r == -1) {
    fprintf(stderr, "tutorwatch eval: %s:%lu: line longer than %d bytes\n", path, line + 1,
            EVAL_MAX_LINE);
    status = 1;
  } else if (r == -2) {
    fprintf(stderr, "tutorwatch eval: cannot read %s: %s\n", path, strerror(errno));
    status = 1;
  }
  free(buf);
  fclose(f);
  return status;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* lead_stats: median and 10th percentile (nearest rank) of the lead times, in days, of the
 * found scenarios with a collapse, of scenario `scen` (-1: all). NAN when there is none. */
static void lead_stats(const eval_t *ev, int scen, double *lead, double *median, double *p10) {
  size_t n = 0;
  for (size_t k = 0; k < ev->n_inst; k++) {
    const eval_inst_t *in = &ev->inst[k];
    if ((scen >= 0 && in->scenario != scen) || in->healthy || in->collapse_ms < 0 ||
        in->first_hit_ms < 0)
      continue;
    lead[n++] = (double)(in->collapse_ms - in->first_hit_ms) / MS_PER_DAY;
  }
  *median = *p10 = NAN;
  if (n == 0) return;
  qsort(lead, n, sizeof *lead, cmp_double);
  *median = n % 2 ? lead[n / 2] : (lead[n / 2 - 1] + lead[n / 2]) / 2;
  size_t rank = (n + 9) / 10; /* ceil(0.1 n), at least 1 */
  *p10 = lead[rank - 1];
}

static json_t *num_or_null(double v) {
  return isnan(v) ? json_null() : json_real(round(v * 1000) / 1000);
}

static void print_num(double v, int width) {
  if (isnan(v))
    printf(" %*s", width, "-");
  else
    printf(" %*.*f", width, 2, v);
}

/* report: prints the table and fills *json_out. 0, or 70 out of memory. */
static int report(const eval_t *ev, uint64_t inst_days, json_t **json_out) {
  double *lead = malloc((ev->n_inst ? ev->n_inst : 1) * sizeof *lead);
  json_t *root = json_object(), *scens = json_object();
  if (lead == NULL || root == NULL || scens == NULL) {
    free(lead);
    json_decref(root);
    json_decref(scens);
    return 70;
  }
  printf("%-22s %-21s %6s %6s %7s %7s %7s %9s %9s %9s\n", "scenario", "family", "n", "found",
         "recall", "alerts", "true", "precision", "lead_med", "lead_p10");
  uint64_t n_all = 0, found_all = 0;
  for (size_t k = 0; k < ev->n_scen; k++) {
    const eval_scen_t *s = &ev->scen[k];
    int healthy = strcmp(s->family, "healthy") == 0;
    uint64_t found = 0;
    for (size_t i = 0; i < ev->n_inst; i++)
      found += ev->inst[i].scenario == (int)k && ev->inst[i].first_hit_ms >= 0;
    double recall = healthy || s->n == 0 ? NAN : (double)found / (double)s->n;
    double precision = s->alerts ? (double)s->true_alerts / (double)s->alerts : NAN;
    double med, p10;
    lead_stats(ev, (int)k, lead, &med, &p10);
    if (!healthy) {
      n_all += s->n;
      found_all += found;
    }
    printf("%-22s %-21s %6" PRIu64 " %6" PRIu64, s->name, s->family, s->n, found);
    print_num(recall, 7);
    printf(" %7" PRIu64 " %7" PRIu64, s->alerts, s->true_alerts);
    print_num(precision, 9);
    print_num(med, 9);
    print_num(p10, 9);
    printf("\n");
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:o, s:I, s:I, s:I, s:o, s:o, s:o}", "family", s->family, "institutions",
        (json_int_t)s->n, "found", (json_int_t)found, "recall", num_or_null(recall), "alerts",
        (json_int_t)s->alerts, "true_alerts", (json_int_t)s->true_alerts, "false_alerts",
        (json_int_t)(s->alerts - s->true_alerts), "precision", num_or_null(precision),
        "lead_time_days_median", num_or_null(med), "lead_time_days_p10", num_or_null(p10));
    if (o == NULL || json_object_set_new(scens, s->name, o) != 0) goto oom;
  }
  uint64_t false_alerts = ev->alerts - ev->true_alerts;
  double recall = n_all ? (double)found_all / (double)n_all : NAN;
  double precision = ev->alerts ? (double)ev->true_alerts / (double)ev->alerts : NAN;
  double per1000 = inst_days ? (double)false_alerts * 1000.0 / (double)inst_days : NAN;
  double med, p10;
  lead_stats(ev, -1, lead, &med, &p10);
  printf("%-22s %-21s %6" PRIu64 " %6" PRIu64, "overall", "", n_all, found_all);
  print_num(recall, 7);
  printf(" %7" PRIu64 " %7" PRIu64, ev->alerts, ev->true_alerts);
  print_num(precision, 9);
  print_num(med, 9);
  print_num(p10, 9);
  printf("\nfalse alerts: %" PRIu64, false_alerts);
  if (inst_days)
    printf(" (%.3f per 1,000 institution-days over %" PRIu64 " institution-days)\n", per1000,
           inst_days);
  else
    printf(" (give --institutions and --days for the rate per 1,000 institution-days)\n");
  if (ev->unknown_rule_alerts)
    printf("alerts of rules without a family label in the rule file: %" PRIu64 "\n",
           ev->unknown_rule_alerts);
  json_t *overall =
      json_pack("{s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I}", "recall", num_or_null(recall),
                "precision", num_or_null(precision), "false_alerts_per_1000_institution_days",
                num_or_null(per1000), "lead_time_days_median", num_or_null(med),
                "lead_time_days_p10", num_or_null(p10), "scenarios", (json_int_t)n_all, "found",
                (json_int_t)found_all, "alerts", (json_int_t)ev->alerts, "true_alerts",
                (json_int_t)ev->true_alerts, "false_alerts", (json_int_t)false_alerts);
  if (overall == NULL || json_object_set_new(root, "overall", overall) != 0) goto oom;
  if (json_object_set_new(root, "scenarios", scens) != 0) {
    scens = NULL;
    goto oom;
  }
  free(lead);
  *json_out = root;
  return 0;
oom:
  free(lead);
  json_decref(scens);
  json_decref(root);
  return 70;
}

int tw_cmd_eval(int argc, char **argv) {
  static const struct option longopts[] = {{"truth", required_argument, NULL, 't'},
                                           {"alerts", required_argument, NULL, 'a'},
                                           {"rules", required_argument, NULL, 'r'},
                                           {"json", required_argument, NULL, 'j'},
                                           {"institutions", required_argument, NULL, 'i'},
                                           {"days", required_argument, NULL, 'd'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *truth = NULL, *alerts = NULL, *rules = TW_SOURCE_DIR "/rules/packs/default.yaml";
  const char *json_path = NULL;
  uint64_t institutions = 0, days = 0;
  int c, status = 0;
  eval_t ev;
  tw_schema_t *schema = NULL;
  json_t *out = NULL;
  memset(&ev, 0, sizeof ev);
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 't':
        truth = optarg;
        break;
      case 'a':
        alerts = optarg;
        break;
      case 'r':
        rules = optarg;
        break;
      case 'j':
        json_path = optarg;
        break;
      case 'i':
        if (parse_count(optarg, 10000000, &institutions) < 0)
          return usage_error("--institutions wants a positive integer, not ", optarg);
        break;
      case 'd':
        if (parse_count(optarg, 100000, &days) < 0)
          return usage_error("--days wants a positive integer, not ", optarg);
        break;
      case 'h':
        usage(stdout);
        return 0;
      default:
        return usage_error("unknown option or missing value: ",
                           optind > 0 && optind <= argc ? argv[optind - 1] : "?");
    }
  }
  if (optind < argc) return usage_error("unexpected argument: ", argv[optind]);
  if (truth == NULL) return usage_error("--truth FILE is required", "");
  if (alerts == NULL) return usage_error("--alerts FILE is required", "");
  if ((institutions == 0) != (days == 0))
    return usage_error("--institutions and --days go together", "");

  char schema_path[4096];
  tw_schema_error_t serr;
  tw_rule_error_t rerr;
  if (tw_schema_path_for_rules(rules, schema_path, sizeof schema_path) != 0 ||
      tw_schema_load(schema_path, &schema, &serr) != 0) {
    fprintf(stderr, "tutorwatch eval: the schema for %s does not load (%s)\n", rules, schema_path);
    status = 1;
    goto done;
  }
  int rc = tw_rules_load(rules, schema, &ev.rules, &rerr);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch eval: %s:%d:%d: %s\n", rerr.file[0] ? rerr.file : rules, rerr.line,
            rerr.col, rerr.message);
    status = rc == TW_ENOMEM ? 70 : 1;
    goto done;
  }
  ev.by_id = json_object();
  if (ev.by_id == NULL) {
    status = 70;
    goto done;
  }
  if ((status = load_truth(&ev, truth)) != 0) goto done;
  if ((status = score_alerts(&ev, alerts)) != 0) goto done;
  if ((status = report(&ev, institutions * days, &out)) != 0) goto done;
  if (json_path != NULL) {
    int bad;
    if (strcmp(json_path, "-") == 0) {
      bad = json_dumpf(out, stdout,
                       JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) != 0 ||
            fputc('\n', stdout) == EOF;
    } else {
      FILE *f = fopen(json_path, "w");
      bad =
          f == NULL ||
          json_dumpf(out, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) != 0 ||
          fputc('\n', f) == EOF;
      if (f != NULL && fclose(f) != 0) bad = 1;
    }
    if (bad) {
      fprintf(stderr, "tutorwatch eval: cannot write %s\n", json_path);
      status = 1;
    }
  }
  if (fflush(stdout) != 0) status = 1;
done:
  if (status == 70) fprintf(stderr, "tutorwatch eval: out of memory\n");
  json_decref(out);
  json_decref(ev.by_id);
  free(ev.inst);
  tw_rules_free(ev.rules);
  tw_schema_free(schema);
  return status;
}
