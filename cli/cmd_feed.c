/* cmd_feed.c: placeholder until the `feed` command lands; it refuses to run. */
#include <stdio.h>

#include "tw_cli.h"

int tw_cmd_feed(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "tutorwatch feed: not built yet\n");
  return 70;
}
