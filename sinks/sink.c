/*
 * sink.c: the table of alert sinks and the regulator-feed topic.
 *
 * Every output is one file defining one tw_sink_vt_t; this table is the only place that names
 * them, so a new output is one new file and one row here.
 *
 * The topic is what ZeroMQ prefix subscriptions filter on, so it is also an access boundary:
 * it starts with the alert's 6-digit region code and nothing else, and an alert whose region is
 * not exactly six ASCII digits gets no topic (a region like "44/x" must never be able to fall
 * under another prefix).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_sink.h"

extern const tw_sink_vt_t tw__sink_jsonl_vt;
extern const tw_sink_vt_t tw__sink_zmq_pub_vt;

static const tw_sink_vt_t *const kSinks[] = {
    &tw__sink_jsonl_vt,
    &tw__sink_zmq_pub_vt,
};

const tw_sink_vt_t *tw_sink_find(const char *name) {
  if (name == NULL) return NULL;
  for (size_t i = 0; i < sizeof kSinks / sizeof kSinks[0]; i++)
    if (strcmp(kSinks[i]->name, name) == 0) return kSinks[i];
  return NULL;
}

int tw_feed_topic(const tw_alert_t *alert, char *buf, size_t cap) {
  if (alert == NULL || buf == NULL || alert->rule == NULL || alert->rule->name == NULL)
    return TW_EINVAL;
  if ((unsigned)alert->rule->severity > TW_SEV_CRITICAL) return TW_EINVAL;
  if (alert->region.ptr == NULL || alert->region.len != 6) return TW_EINVAL;
  for (size_t i = 0; i < 6; i++)
    if (alert->region.ptr[i] < '0' || alert->region.ptr[i] > '9') return TW_EINVAL;
  int n = snprintf(buf, cap, "%.6s/%s/%s", alert->region.ptr,
                   tw_severity_name(alert->rule->severity), alert->rule->name);
  if (n < 0 || (size_t)n >= cap) {
    if (cap > 0) buf[0] = '\0';
    return TW_ETOOBIG;
  }
  return n;
}

FILE *tw_jsonl_open_append(const char *path, size_t *torn_bytes) {
  if (torn_bytes != NULL) *torn_bytes = 0;
  int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    /* Write-only targets such as /dev/full or a FIFO cannot be read back: plain append. */
    return fopen(path, "a");
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    /* Look back for the last newline, 4 KiB at a time (a line is at most a few KiB). */
    char buf[4096];
    off_t end = st.st_size, keep = -1;
    for (off_t at = end; at > 0 && keep < 0;) {
      size_t n = at < (off_t)sizeof buf ? (size_t)at : sizeof buf;
      at -= (off_t)n;
      if (pread(fd, buf, n, at) != (ssize_t)n) break;
      for (size_t i = n; i > 0; i--)
        if (buf[i - 1] == '\n') {
          keep = at + (off_t)i;
          break;
        }
      if (at == 0 && keep < 0) keep = 0;
    }
    if (keep >= 0 && keep < end && ftruncate(fd, keep) == 0 && torn_bytes != NULL)
      *torn_bytes = (size_t)(end - keep);
  }
  FILE *f = fdopen(fd, "a");
  if (f == NULL) {
    int e = errno;
    close(fd);
    errno = e;
  }
  return f;
}
