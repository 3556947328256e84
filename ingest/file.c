/*
 * file.c: the file / stdin source: JSON Lines or a stream of msgpack objects.
 *
 * The input is read with read(2) in chunks of at most FILE_CHUNK_BYTES into one buffer that is
 * allocated at open and reused until close; nothing is allocated per record. The buffer holds
 * max(max_record_bytes, TW_EVENT_MAX_BYTES) + 2 + FILE_CHUNK_BYTES bytes, so a whole record always
 * fits, and memory stays bounded whatever the input: a JSON line longer than max_record_bytes is
 * not buffered but skipped chunk by chunk, keeping only its first TW_REC_HEAD_BYTES, and is
 * delivered once, at its end, as a TW_REC_TRUNCATED record with its real length.
 *
 * JSONL: one record per line; "\n" and "\r\n" are stripped; empty lines are skipped but counted,
 * so `line` is the line number an editor shows. A last line without "\n" is still delivered.
 * msgpack: consecutive objects framed by tw_msgpack_frame (which trusts no declared length);
 * `line` is the object number. A framing error, or end of input inside an object, delivers one
 * TW_REC_BROKEN record with the first bytes that remain and ends the input: msgpack has no
 * delimiter to resynchronise on.
 *
 * Work per poll is bounded by max_records records plus the chunks read to complete the last one
 * (for an over-long line: its length divided by the chunk size).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_source.h"

#define FILE_CHUNK_BYTES (1u << 20)

extern const tw_source_vt_t tw__source_file_vt;

typedef struct file_source {
  tw_source_t base;
  int fd;
  int owns_fd;  /* 0 for stdin: never closed by us */
  char *origin; /* the path as given, "-" for stdin */
  tw_format_t format;
  size_t max_record_bytes;
  char *buf;
  size_t cap, start, end; /* unconsumed input is buf[start, end) */
  uint64_t buf_offset;    /* input offset of buf[0] */
  uint64_t line;          /* lines (JSONL) or objects (msgpack) consumed so far */
  int eof;                /* read(2) returned 0 */
  int done;               /* nothing more will be delivered */
  /* An over-long JSON line being skipped. */
  int skipping;
  uint64_t skip_offset, skip_len_bytes;
  char skip_last; /* last byte of the skipped line seen so far, to strip "\r\n" */
  size_t head_len;
  char head[TW_REC_HEAD_BYTES];
  char reason[32]; /* a broken record's reason, valid during its callback */
} file_source_t;

static size_t min_size(size_t a, size_t b) {
  return a < b ? a : b;
}

/* fill: move unconsumed bytes to the front and read one chunk. Returns 0 (eof set at end of
 * input) or TW_EIO. */
static int fill(file_source_t *fs) {
  if (fs->start > 0) {
    memmove(fs->buf, fs->buf + fs->start, fs->end - fs->start);
    fs->buf_offset += fs->start;
    fs->end -= fs->start;
    fs->start = 0;
  }
  size_t room = min_size(FILE_CHUNK_BYTES, fs->cap - fs->end);
  if (room == 0) return TW_EIO; /* unreachable: the steps never ask for more with a full buffer */
  for (;;) {
    ssize_t r = read(fs->fd, fs->buf + fs->end, room);
    if (r > 0) {
      fs->end += (size_t)r;
      return 0;
    }
    if (r == 0) {
      fs->eof = 1;
      return 0;
    }
    if (errno != EINTR) return TW_EIO;
  }
}

/* resume_at: position a regular file just after a record that was already processed. A JSONL
 * line terminator there belongs to that record, so it is skipped without counting a line. */
static int resume_at(file_source_t *fs, uint64_t offset, uint64_t line) {
  if (lseek(fs->fd, (off_t)offset, SEEK_SET) == (off_t)-1) return TW_EIO;
  fs->buf_offset = offset;
  fs->line = line;
  if (fs->format != TW_FORMAT_JSONL) return 0;
  int rc = fill(fs);
  if (rc != 0) return rc;
  if (fs->start < fs->end && fs->buf[fs->start] == '\r') fs->start++;
  if (fs->start == fs->end && !fs->eof) {
    rc = fill(fs);
    if (rc != 0) return rc;
  }
  if (fs->start < fs->end && fs->buf[fs->start] == '\n') fs->start++;
  return 0;
}

static void rec_init(const file_source_t *fs, tw_record_t *rec, uint64_t offset) {
  memset(rec, 0, sizeof *rec);
  rec->format = fs->format;
  rec->origin = fs->origin;
  rec->offset_bytes = offset;
  rec->line = fs->line;
}

/* The steps below deliver at most one record. They return 0 or the callback's non-zero value,
 * and set *delivered when a record went out or *need_more when a read must come first. */

static int jsonl_step(file_source_t *fs, tw_record_cb cb, void *ud, int *delivered,
                      int *need_more) {
  const char *p = fs->buf + fs->start;
  size_t avail = fs->end - fs->start;
  const char *nl = memchr(p, '\n', avail);
  tw_record_t rec;

  if (fs->skipping) {
    size_t take = nl != NULL ? (size_t)(nl - p) : avail;
    if (fs->head_len < sizeof fs->head) {
      size_t c = min_size(sizeof fs->head - fs->head_len, take);
      memcpy(fs->head + fs->head_len, p, c);
      fs->head_len += c;
    }
    if (take > 0) fs->skip_last = p[take - 1];
    fs->skip_len_bytes += take;
    fs->start += take;
    if (nl == NULL && !fs->eof) {
      *need_more = 1;
      return 0;
    }
    if (nl != NULL) fs->start++; /* the '\n' */
    uint64_t full = fs->skip_len_bytes;
    if (nl != NULL && fs->skip_last == '\r') full--;
    fs->skipping = 0;
    fs->line++;
    rec_init(fs, &rec, fs->skip_offset);
    rec.data = fs->head;
    rec.len_bytes = (size_t)(full < fs->head_len ? full : fs->head_len);
    rec.full_len_bytes = full;
    rec.flags = TW_REC_TRUNCATED;
    rec.reason = "too_long";
    *delivered = 1;
    return cb(ud, &rec);
  }

  if (avail == 0) {
    if (fs->eof) {
      fs->done = 1;
    } else {
      *need_more = 1;
    }
    return 0;
  }
  size_t len, consume;
  if (nl == NULL) {
    if (!fs->eof) {
      /* Without its '\n' yet, the line already holds more than max_record_bytes of content
       * (at most one byte may be a '\r'): stop buffering it and skip it. */
      if (avail > fs->max_record_bytes + 1) {
        fs->skipping = 1;
        fs->skip_offset = fs->buf_offset + fs->start;
        fs->skip_len_bytes = 0;
        fs->skip_last = 0;
        fs->head_len = 0;
      } else {
        *need_more = 1;
      }
      return 0;
    }
    len = consume = avail; /* last line without a newline */
  } else {
    len = (size_t)(nl - p);
    consume = len + 1;
    if (len > 0 && p[len - 1] == '\r') len--;
  }
  fs->line++;
  uint64_t offset = fs->buf_offset + fs->start;
  fs->start += consume;
  if (len == 0) return 0; /* empty line: counted, not delivered */
  rec_init(fs, &rec, offset);
  rec.data = p;
  rec.len_bytes = len;
  rec.full_len_bytes = len;
  if (nl == NULL) rec.flags |= TW_REC_UNTERMINATED;
  if (len > fs->max_record_bytes) {
    rec.len_bytes = min_size(len, TW_REC_HEAD_BYTES);
    rec.flags |= TW_REC_TRUNCATED;
    rec.reason = "too_long";
  }
  *delivered = 1;
  return cb(ud, &rec);
}

static int msgpack_step(file_source_t *fs, tw_record_cb cb, void *ud, int *delivered,
                        int *need_more) {
  const char *p = fs->buf + fs->start;
  size_t avail = fs->end - fs->start;
  tw_record_t rec;
  if (avail == 0) {
    if (fs->eof) {
      fs->done = 1;
    } else {
      *need_more = 1;
    }
    return 0;
  }
  size_t n = 0;
  tw_decode_error_t err;
  /* Any depth and up to the whole buffer: an object the decoder will refuse (too deep, over
   * max_record_bytes) is still stepped over, so the objects after it are not lost. */
  int rc = tw_msgpack_extent(p, avail, fs->cap, &n, &err);
  if (rc == 0) {
    fs->line++;
    rec_init(fs, &rec, fs->buf_offset + fs->start);
    fs->start += n;
    rec.data = p;
    rec.len_bytes = n;
    rec.full_len_bytes = n;
    if (n > fs->max_record_bytes) {
      rec.len_bytes = min_size(n, TW_REC_HEAD_BYTES);
      rec.flags = TW_REC_TRUNCATED;
      rec.reason = "too_long";
    }
    *delivered = 1;
    return cb(ud, &rec);
  }
  if (rc == TW_EAGAIN && !fs->eof && !(fs->start == 0 && fs->end == fs->cap)) {
    *need_more = 1;
    return 0;
  }
  if (rc == TW_EAGAIN) {
    snprintf(fs->reason, sizeof fs->reason, "%s", fs->eof ? "truncated" : "too_long");
  } else {
    snprintf(fs->reason, sizeof fs->reason, "%s", err.reason[0] ? err.reason : "invalid_msgpack");
  }
  fs->line++;
  rec_init(fs, &rec, fs->buf_offset + fs->start);
  rec.data = p;
  rec.len_bytes = min_size(avail, TW_REC_HEAD_BYTES);
  rec.full_len_bytes = rec.len_bytes;
  rec.flags = TW_REC_BROKEN | (rc == TW_EAGAIN && fs->eof ? TW_REC_UNTERMINATED : 0u);
  rec.reason = fs->reason;
  fs->start = fs->end;
  fs->done = 1;
  *delivered = 1;
  return cb(ud, &rec);
}

static int file_poll(tw_source_t *src, size_t max_records, tw_record_cb cb, void *ud) {
  file_source_t *fs = (file_source_t *)src;
  if (fs == NULL || cb == NULL) return TW_EINVAL;
  int n = 0;
  while ((size_t)n < max_records && n < INT32_MAX) {
    if (fs->done) return n > 0 ? n : TW_EOF;
    int delivered = 0, need_more = 0;
    int rc = fs->format == TW_FORMAT_MSGPACK ? msgpack_step(fs, cb, ud, &delivered, &need_more)
                                             : jsonl_step(fs, cb, ud, &delivered, &need_more);
    if (rc != 0) return rc;
    if (delivered) n++;
    if (need_more) {
      rc = fill(fs);
      if (rc != 0) return rc;
    }
  }
  return n;
}

static int file_fd(tw_source_t *src) {
  (void)src;
  return -1; /* always ready */
}

static void file_close(tw_source_t *src) {
  file_source_t *fs = (file_source_t *)src;
  if (fs == NULL) return;
  if (fs->owns_fd && fs->fd >= 0) close(fs->fd);
  free(fs->buf);
  free(fs->origin);
  free(fs);
}

static int file_open(const char *target, const tw_source_opts_t *opts, tw_source_t **out) {
  file_source_t *fs = NULL;
  int rc = TW_ENOMEM;
  if (target == NULL || out == NULL) return TW_EINVAL;
  size_t max_rec =
      opts != NULL && opts->max_record_bytes > 0 ? opts->max_record_bytes : TW_EVENT_MAX_BYTES;
  if (max_rec > SIZE_MAX / 4) return TW_EINVAL;
  fs = calloc(1, sizeof *fs);
  if (fs == NULL) goto fail;
  fs->base.vt = &tw__source_file_vt;
  fs->fd = -1;
  fs->max_record_bytes = max_rec;
  fs->format = opts != NULL ? opts->format : TW_FORMAT_AUTO;
  if (fs->format == TW_FORMAT_AUTO) fs->format = tw_format_from_path(target);
  fs->cap = (max_rec > TW_EVENT_MAX_BYTES ? max_rec : TW_EVENT_MAX_BYTES) + 2 + FILE_CHUNK_BYTES;
  fs->origin = strdup(target);
  fs->buf = malloc(fs->cap);
  if (fs->origin == NULL || fs->buf == NULL) goto fail;
  if (strcmp(target, "-") == 0) {
    fs->fd = STDIN_FILENO;
  } else {
    fs->fd = open(target, O_RDONLY | O_CLOEXEC);
    if (fs->fd < 0) {
      rc = errno == ENOENT || errno == ENOTDIR ? TW_ENOENT : TW_EIO;
      goto fail;
    }
    fs->owns_fd = 1;
    if (opts != NULL && opts->start_offset_bytes > 0) {
      rc = resume_at(fs, opts->start_offset_bytes, opts->start_line);
      if (rc != 0) goto fail;
    }
  }
  *out = &fs->base;
  return 0;
fail:
  file_close(fs ? &fs->base : NULL);
  return rc;
}

const tw_source_vt_t tw__source_file_vt = {
    .name = "file",
    .open = file_open,
    .poll = file_poll,
    .fd = file_fd,
    .close = file_close,
};
