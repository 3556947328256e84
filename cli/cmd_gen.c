/* cmd_gen.c: placeholder until the `gen` command lands; it refuses to run. */
#include <stdio.h>

#include "tw_cli.h"

int tw_cmd_gen(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "tutorwatch gen: not built yet\n");
  return 70;
}
