/*
 * tw_sink.h: alert sinks behind one small vtable.
 *
 * A sink receives each alert once, in order, as the struct and its canonical JSON line (both
 * borrowed for the call). Sinks are registered in one table (sink.c), so a new output is one new
 * file and one row. Sinks are single-threaded.
 */
#ifndef TW_SINK_H
#define TW_SINK_H

#include <stddef.h>
#include <stdio.h>

#include "tw_alert.h"

typedef struct tw_sink tw_sink_t;

typedef struct tw_sink_vt {
  const char *name; /* "jsonl" (file or "-" for stdout), "zmq-pub" (regulator feed) */
  /* open: target is a path or endpoint. Errors: TW_EIO, TW_EZMQ, TW_ENOMEM. */
  int (*open)(const char *target, tw_sink_t **out);
  /* write: deliver one alert. Returns 0 or TW_EIO / TW_EZMQ, or TW_EINVAL for an alert the
   * sink cannot represent (no topic; a JSON line containing '\n'). A feed with no subscriber,
   * or a slow one past its high-water mark, drops without blocking and counts the drop. */
  int (*write)(tw_sink_t *sink, const tw_alert_t *alert, const char *json, size_t len);
  int (*flush)(tw_sink_t *sink);  /* make written alerts durable/visible; 0 or TW_EIO */
  void (*close)(tw_sink_t *sink); /* flush and free; NULL accepted */
} tw_sink_vt_t;

struct tw_sink {
  const tw_sink_vt_t *vt; /* first member of every implementation */
};

/*
 * tw_jsonl_open_append: open a JSON Lines file for appending (creating it, mode 0644 less umask).
 * A last line without its newline (left by a process killed mid-write) is cut off first, so the
 * next line does not fuse with it; its record is written again by the restart that re-reads it.
 * *torn_bytes (may be NULL) says how many bytes were cut. Returns the stream, or NULL with errno
 * set. The caller fcloses it.
 */
FILE *tw_jsonl_open_append(const char *path, size_t *torn_bytes);

/* tw_sink_find: the vtable registered under name, or NULL. */
const tw_sink_vt_t *tw_sink_find(const char *name);

/*
 * tw_feed_topic: the regulator-feed topic of an alert: "<region>/<severity>/<rule>", e.g.
 * "440106/high/prepaid_over_cap", so a ZeroMQ prefix subscription "44" selects a province.
 * Returns the length written to buf (NUL-terminated), TW_ETOOBIG when cap is too small (buf is
 * then ""), or TW_EINVAL when the alert has no rule, an unknown severity, or a region that is not
 * exactly six ASCII digits (such an alert must not reach a prefix-filtered feed).
 */
int tw_feed_topic(const tw_alert_t *alert, char *buf, size_t cap);

#endif
