/*
 * jsonl.c: the JSON Lines alert sink: one alert's canonical JSON per line, to a file or stdout.
 *
 * A file is opened in APPEND mode (created if missing, never truncated): a second run on the same
 * state adds its alerts after the first run's, so the file is the history of what was emitted.
 * Remove the file first for a fresh one. "-" writes to stdout, which is flushed but never closed.
 *
 * Output goes through a 64 KiB stdio buffer allocated at open; write copies the line into it, so
 * nothing is allocated per alert. flush is fflush (visible to readers); close also fsyncs a file
 * (durable) before closing it. close cannot report errors: call flush first to see them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_sink.h"

#define JSONL_BUFFER_BYTES (64 * 1024)

extern const tw_sink_vt_t tw__sink_jsonl_vt;

typedef struct jsonl_sink {
  tw_sink_t base;
  FILE *f;
  int is_stdout;
} jsonl_sink_t;

static int jsonl_write(tw_sink_t *sink, const tw_alert_t *alert, const char *json, size_t len) {
  jsonl_sink_t *js = (jsonl_sink_t *)sink;
  (void)alert;
  if (js == NULL || (json == NULL && len > 0)) return TW_EINVAL;
  if (len > 0 && memchr(json, '\n', len) != NULL) return TW_EINVAL; /* would split the record */
  if (len > 0 && fwrite(json, 1, len, js->f) != len) return TW_EIO;
  if (fputc('\n', js->f) == EOF) return TW_EIO;
  return 0;
}

static int jsonl_flush(tw_sink_t *sink) {
  jsonl_sink_t *js = (jsonl_sink_t *)sink;
  if (js == NULL) return TW_EINVAL;
  return fflush(js->f) == 0 ? 0 : TW_EIO;
}

static void jsonl_close(tw_sink_t *sink) {
  jsonl_sink_t *js = (jsonl_sink_t *)sink;
  if (js == NULL) return;
  if (js->f != NULL) {
    fflush(js->f);
    if (!js->is_stdout) {
      fsync(fileno(js->f));
      fclose(js->f);
    }
  }
  free(js);
}

/* On TW_EIO, errno tells why (strerror(errno)). */
static int jsonl_open(const char *target, tw_sink_t **out) {
  jsonl_sink_t *js = NULL;
  int rc = TW_ENOMEM;
  if (target == NULL || out == NULL) return TW_EINVAL;
  js = calloc(1, sizeof *js);
  if (js == NULL) goto fail;
  js->base.vt = &tw__sink_jsonl_vt;
  if (strcmp(target, "-") == 0) {
    js->f = stdout;
    js->is_stdout = 1;
  } else {
    rc = TW_EIO;
    js->f = tw_jsonl_open_append(target, NULL);
    if (js->f == NULL) goto fail;
    /* A NULL buffer lets stdio allocate it once; only files get a large one, so alerts on a
     * terminal or pipe still appear when flushed by the pipeline's group commit. */
    if (setvbuf(js->f, NULL, _IOFBF, JSONL_BUFFER_BYTES) != 0) goto fail;
  }
  *out = &js->base;
  return 0;
fail:
  jsonl_close(js ? &js->base : NULL);
  return rc;
}

const tw_sink_vt_t tw__sink_jsonl_vt = {
    .name = "jsonl",
    .open = jsonl_open,
    .write = jsonl_write,
    .flush = jsonl_flush,
    .close = jsonl_close,
};
