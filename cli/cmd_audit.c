/*
 * cmd_audit.c: `tutorwatch audit verify --state DIR`: check the hash chain of the alert
 * lifecycle's audit log (tw_lifecycle_verify) and name the first broken record.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tw_cli.h"
#include "tw_error.h"
#include "tw_lifecycle.h"

static void audit_usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch audit verify --state DIR\n"
      "\n"
      "Check the audit log of the alert lifecycle (DIR/lifecycle, written by `run --control`):\n"
      "every record (each alert, state change, comment, snooze and escalation) carries the\n"
      "BLAKE2b hash of its content and of the record before it, so a record changed, removed\n"
      "or reordered after it was written breaks the chain. Prints the number of records, or\n"
      "the first broken record and why.\n"
      "\n"
      "Exit status: 0 chain intact, 1 broken chain or no lifecycle store, 2 usage error.\n"
      "\n"
      "example:\n"
      "  tutorwatch audit verify --state live\n");
}

int tw_cmd_audit(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    audit_usage(stdout);
    return 0;
  }
  if (argc != 4 || strcmp(argv[1], "verify") != 0 || strcmp(argv[2], "--state") != 0) {
    audit_usage(stderr);
    return 2;
  }
  uint64_t n = 0, bad = 0;
  char msg[512];
  int rc = tw_lifecycle_verify(argv[3], &n, &bad, msg, sizeof msg);
  if (rc == 0) {
    printf("audit: %s\n", msg);
    return 0;
  }
  if (rc == TW_ESTATE && bad > 0) {
    printf("audit: BROKEN at record %" PRIu64 ": %s (%" PRIu64 " records before it verified)\n",
           bad, msg, n);
    return 1;
  }
  fprintf(stderr, "tutorwatch audit: %s: %s\n", argv[3], msg);
  return 1;
}
