/*
 * msgpack_frame.c: find where one msgpack object ends, without trusting declared lengths.
 *
 * msgpack-c allocates a map's or array's element table from the declared count before reading
 * the elements, so a map32 claiming 2^31 entries costs gigabytes. This walker runs first: it
 * checks every declared count against the bytes that remain (each element needs at least one
 * byte), bounds depth by TW_EVENT_MAX_DEPTH and size by TW_EVENT_MAX_BYTES, and allocates
 * nothing. Work is O(bytes examined); an explicit stack of pending element counts replaces
 * recursion. tw_msgpack_extent finds the end of an object at any depth with one counter, so a
 * source can step over an object the decoder will reject and go on with the next.
 */
#include <stdio.h>
#include <string.h>

#include "tw_error.h"
#include "tw_event.h"

static void set_err(tw_decode_error_t *err, const char *reason, const char *msg, size_t at) {
  if (err == NULL) return;
  snprintf(err->reason, sizeof err->reason, "%s", reason);
  err->field[0] = '\0';
  snprintf(err->message, sizeof err->message, "%s at byte %zu", msg, at);
}

static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* One element's head: the type byte and its length/count field. Sets *head (bytes of type byte +
 * length field), *payload (data bytes after the head) and *children (elements of a container,
 * 2 per map entry). Returns 0, TW_EAGAIN (the length field is cut off) or TW_EPARSE (0xc1). */
static int element(const unsigned char *p, size_t avail, size_t *head, uint64_t *payload,
                   uint64_t *children, int *container) {
  unsigned b = p[0];
  *head = 1;
  *payload = 0;
  *children = 0;
  *container = 0;
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
  if ((b & 0xf0) == 0x80) {
    *container = 1, *children = 2u * (b & 0x0f);
    return 0;
  }
  if ((b & 0xf0) == 0x90) {
    *container = 1, *children = b & 0x0f;
    return 0;
  }
  if ((b & 0xe0) == 0xa0) {
    *payload = b & 0x1f;
    return 0;
  }
  int n = 0, kind = 0; /* width of the length/count field; 1 array, 2 map, 3 ext */
  switch (b) {
    case 0xc4:
    case 0xd9:
      n = 1;
      break; /* bin8, str8 */
    case 0xc5:
    case 0xda:
      n = 2;
      break; /* bin16, str16 */
    case 0xc6:
    case 0xdb:
      n = 4;
      break; /* bin32, str32 */
    case 0xc7:
      n = 1, kind = 3;
      break; /* ext8 */
    case 0xc8:
      n = 2, kind = 3;
      break; /* ext16 */
    case 0xc9:
      n = 4, kind = 3;
      break; /* ext32 */
    case 0xca:
      *payload = 4;
      return 0; /* float32 */
    case 0xcb:
      *payload = 8;
      return 0; /* float64 */
    case 0xcc:
    case 0xd0:
      *payload = 1;
      return 0;
    case 0xcd:
    case 0xd1:
      *payload = 2;
      return 0;
    case 0xce:
    case 0xd2:
      *payload = 4;
      return 0;
    case 0xcf:
    case 0xd3:
      *payload = 8;
      return 0;
    case 0xd4:
      *payload = 2;
      return 0; /* fixext1: type + 1 */
    case 0xd5:
      *payload = 3;
      return 0;
    case 0xd6:
      *payload = 5;
      return 0;
    case 0xd7:
      *payload = 9;
      return 0;
    case 0xd8:
      *payload = 17;
      return 0;
    case 0xdc:
      n = 2, kind = 1;
      break; /* array16 */
    case 0xdd:
      n = 4, kind = 1;
      break; /* array32 */
    case 0xde:
      n = 2, kind = 2;
      break; /* map16 */
    case 0xdf:
      n = 4, kind = 2;
      break; /* map32 */
    default:
      return TW_EPARSE; /* 0xc1, never used */
  }
  if (avail < 1 + (size_t)n) return TW_EAGAIN;
  uint64_t v = be(p + 1, n);
  *head += (size_t)n;
  if (kind == 1 || kind == 2) {
    *container = 1;
    *children = kind == 2 ? 2 * v : v;
  } else {
    *payload = v + (kind == 3 ? 1 : 0); /* ext carries a type byte */
  }
  return 0;
}

int tw_msgpack_frame(const char *buf, size_t len, size_t *obj_len, tw_decode_error_t *err) {
  const unsigned char *p = (const unsigned char *)buf;
  uint64_t pending[TW_EVENT_MAX_DEPTH + 1]; /* elements still to read at each open level */
  int depth = 0;
  size_t pos = 0;
  pending[0] = 1;
  for (;;) {
    while (depth >= 0 && pending[depth] == 0) depth--;
    if (depth < 0) {
      *obj_len = pos;
      return 0;
    }
    if (pos >= TW_EVENT_MAX_BYTES) {
      set_err(err, "too_long", "msgpack object larger than 64 KiB", pos);
      return TW_ETOOBIG;
    }
    if (pos >= len) return TW_EAGAIN;
    pending[depth]--;
    size_t head;
    uint64_t payload, children;
    int container;
    int rc = element(p + pos, len - pos, &head, &payload, &children, &container);
    if (rc == TW_EPARSE) {
      set_err(err, "invalid_msgpack", "reserved msgpack type byte 0xc1", pos);
      return rc;
    }
    if (rc != 0) return rc;
    if (container) {
      if (children > TW_EVENT_MAX_BYTES) {
        set_err(err, "too_long", "msgpack container declares more elements than 64 KiB can hold",
                pos);
        return TW_ETOOBIG;
      }
      if (depth + 1 > TW_EVENT_MAX_DEPTH) {
        set_err(err, "too_deep", "msgpack nesting deeper than 8", pos);
        return TW_ETOOBIG;
      }
      pos += head;
      pending[++depth] = children;
      continue;
    }
    if (head + payload > TW_EVENT_MAX_BYTES) {
      set_err(err, "too_long", "msgpack value declares more than 64 KiB", pos);
      return TW_ETOOBIG;
    }
    if ((uint64_t)(len - pos) < head + payload) return TW_EAGAIN;
    pos += head + (size_t)payload;
  }
}

int tw_msgpack_extent(const char *buf, size_t len, size_t max_bytes, size_t *obj_len,
                      tw_decode_error_t *err) {
  const unsigned char *p = (const unsigned char *)buf;
  uint64_t pending = 1; /* elements still to read, whatever their depth */
  size_t pos = 0;
  while (pending > 0) {
    /* Every pending element needs at least one more byte. */
    if (pending > max_bytes - pos) {
      set_err(err, "too_long", "msgpack object larger than the input bound", pos);
      return TW_ETOOBIG;
    }
    if (pos >= len) return TW_EAGAIN;
    pending--;
    size_t head;
    uint64_t payload, children;
    int container;
    int rc = element(p + pos, len - pos, &head, &payload, &children, &container);
    if (rc == TW_EPARSE) {
      set_err(err, "invalid_msgpack", "reserved msgpack type byte 0xc1", pos);
      return rc;
    }
    if (rc != 0) return rc;
    if (head + payload > max_bytes - pos) {
      set_err(err, "too_long", "msgpack value larger than the input bound", pos);
      return TW_ETOOBIG;
    }
    if (container) pending += children;
    if ((uint64_t)(len - pos) < head + payload) return TW_EAGAIN;
    pos += head + (size_t)payload;
  }
  *obj_len = pos;
  return 0;
}
