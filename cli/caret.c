/*
 * caret.c: the source line and caret printed under a file:line:col error (tw_cli.h).
 */
#include <stdio.h>
#include <string.h>

#include "tw_cli.h"

#define CARET_LINE_MAX 4096 /* bytes of a source line shown under an error */

void tw_cli_show_caret(const char *path, int line, int col) {
  FILE *f = fopen(path, "r");
  if (f == NULL || line <= 0) {
    if (f != NULL) fclose(f);
    return;
  }
  char buf[CARET_LINE_MAX];
  int n = 0;
  while (fgets(buf, sizeof buf, f) != NULL) {
    size_t len = strlen(buf);
    int whole = len > 0 && buf[len - 1] == '\n';
    if (++n == line) {
      if (whole) buf[--len] = '\0';
      fprintf(stderr, "  %s\n  ", buf);
      int chars = 0;
      for (size_t i = 0; i < len && chars < col - 1; i++) {
        unsigned char c = (unsigned char)buf[i];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte */
        fputc(c == '\t' ? '\t' : ' ', stderr);
        chars++;
      }
      fputs("^\n", stderr);
      break;
    }
    /* A line longer than the buffer continues in the next read: do not count it twice. */
    while (!whole && fgets(buf, sizeof buf, f) != NULL) {
      len = strlen(buf);
      whole = len > 0 && buf[len - 1] == '\n';
    }
  }
  fclose(f);
}
