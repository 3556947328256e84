/* cmd_send.c: placeholder until the `send` command lands; it refuses to run. */
#include <stdio.h>

#include "tw_cli.h"

int tw_cmd_send(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "tutorwatch send: not built yet\n");
  return 70;
}
