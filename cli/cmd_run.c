/* cmd_run.c: placeholder until the `run` command lands; it refuses to run. */
#include <stdio.h>

#include "tw_cli.h"

int tw_cmd_run(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "tutorwatch run: not built yet\n");
  return 70;
}
