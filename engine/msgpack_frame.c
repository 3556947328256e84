/*
 * msgpack_frame.c: find where one msgpack object ends, without trusting declared lengths.
 *
 * msgpack-c allocates a map's or array's element table from the declared count before reading
 * the elements, so a map32 claiming 2^31 entries costs gigabytes. This walker runs first: it
 * checks every declared count against the bytes that remain (each element needs at least one
 * byte), bounds depth by TW_EVENT_MAX_DEPTH and size by TW_EVENT_MAX_BYTES, and allocates
 * nothing. Work is O(bytes examined); an explicit stack of pending element counts replaces
 * recursion.
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
    unsigned b = p[pos];
    size_t head = 1;        /* bytes of the type byte and length/count field */
    uint64_t payload = 0;   /* bytes of data following the head */
    uint64_t children = 0;  /* elements of a container */
    int container = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      /* fixint, nil, bool */
    } else if ((b & 0xf0) == 0x80) {
      container = 1, children = 2u * (b & 0x0f);
    } else if ((b & 0xf0) == 0x90) {
      container = 1, children = b & 0x0f;
    } else if ((b & 0xe0) == 0xa0) {
      payload = b & 0x1f;
    } else {
      int n = 0; /* width of the length/count field */
      switch (b) {
        case 0xc4: case 0xd9: n = 1; break;                 /* bin8, str8 */
        case 0xc5: case 0xda: n = 2; break;                 /* bin16, str16 */
        case 0xc6: case 0xdb: n = 4; break;                 /* bin32, str32 */
        case 0xc7: n = 1; break;                            /* ext8 */
        case 0xc8: n = 2; break;                            /* ext16 */
        case 0xc9: n = 4; break;                            /* ext32 */
        case 0xca: payload = 4; break;                      /* float32 */
        case 0xcb: payload = 8; break;                      /* float64 */
        case 0xcc: case 0xd0: payload = 1; break;
        case 0xcd: case 0xd1: payload = 2; break;
        case 0xce: case 0xd2: payload = 4; break;
        case 0xcf: case 0xd3: payload = 8; break;
        case 0xd4: payload = 2; break;                      /* fixext1: type + 1 */
        case 0xd5: payload = 3; break;
        case 0xd6: payload = 5; break;
        case 0xd7: payload = 9; break;
        case 0xd8: payload = 17; break;
        case 0xdc: n = 2, container = 1; break;             /* array16 */
        case 0xdd: n = 4, container = 1; break;             /* array32 */
        case 0xde: n = 2, container = 2; break;             /* map16 */
        case 0xdf: n = 4, container = 2; break;             /* map32 */
        default:
          set_err(err, "invalid_msgpack", "reserved msgpack type byte 0xc1", pos);
          return TW_EPARSE;
      }
      if (n > 0) {
        if (len - pos < 1 + (size_t)n) return TW_EAGAIN;
        uint64_t v = be(p + pos + 1, n);
        head += (size_t)n;
        if (container) {
          children = container == 2 ? 2 * v : v;
        } else {
          payload = v + (b >= 0xc7 && b <= 0xc9 ? 1 : 0); /* ext carries a type byte */
        }
      }
    }
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
