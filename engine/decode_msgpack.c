/*
 * decode_msgpack.c: one msgpack map → raw values → the shared validation layer.
 *
 * tw_msgpack_frame checks the object first (declared counts and lengths against the bytes
 * present, depth ≤ TW_EVENT_MAX_DEPTH, size ≤ TW_EVENT_MAX_BYTES), so a map32 claiming 2^31
 * entries or a str32 claiming 4 GiB is refused before msgpack-c sizes anything from it. Then
 * msgpack_unpack builds the object tree in a zone that is reused: one per thread, cleared after
 * each event, so steady-state decoding allocates nothing (msgpack-c keeps the zone's first chunk
 * across clears; strings are referenced in the input, not copied). The per-thread zone is freed
 * by a pthread key destructor when its thread exits.
 */
#include <msgpack.h>
#include <pthread.h>
#include <string.h>

#include "decode_internal.h"
#include "tw_error.h"

/* Big enough for the object tree of a 64-key event without a second chunk. */
#define ZONE_CHUNK_BYTES 16384

static pthread_key_t zone_key;
static pthread_once_t zone_once = PTHREAD_ONCE_INIT;
static int zone_key_ok;

static void zone_destroy(void *z) {
  msgpack_zone_free(z);
}

static void zone_key_init(void) {
  zone_key_ok = pthread_key_create(&zone_key, zone_destroy) == 0;
}

static msgpack_zone *thread_zone(void) {
  pthread_once(&zone_once, zone_key_init);
  if (!zone_key_ok) return NULL;
  msgpack_zone *z = pthread_getspecific(zone_key);
  if (z == NULL) {
    z = msgpack_zone_new(ZONE_CHUNK_BYTES);
    if (z == NULL) return NULL;
    if (pthread_setspecific(zone_key, z) != 0) {
      msgpack_zone_free(z);
      return NULL;
    }
  }
  return z;
}

static uint64_t be(const char *p, int n) {
  const unsigned char *u = (const unsigned char *)p;
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | u[i];
  return v;
}

/* The msgpack timestamp extension (type -1) in its 32, 64 and 96-bit forms. */
static int timestamp_ext(const msgpack_object_ext *e, tw__raw_t *r) {
  switch (e->size) {
    case 4:
      r->u.ts.sec = (int64_t)be(e->ptr, 4);
      r->u.ts.nsec = 0;
      return 0;
    case 8: {
      uint64_t v = be(e->ptr, 8);
      r->u.ts.nsec = (uint32_t)(v >> 34);
      r->u.ts.sec = (int64_t)(v & 0x3ffffffffULL);
      return 0;
    }
    case 12:
      r->u.ts.nsec = (uint32_t)be(e->ptr, 4);
      r->u.ts.sec = (int64_t)be(e->ptr + 4, 8);
      return 0;
    default:
      return -1;
  }
}

static void to_raw(const msgpack_object *o, tw__raw_t *r) {
  memset(r, 0, sizeof *r);
  switch (o->type) {
    case MSGPACK_OBJECT_NIL:
      r->kind = TW__RAW_NULL;
      break;
    case MSGPACK_OBJECT_BOOLEAN:
      r->kind = TW__RAW_BOOL;
      r->u.i = o->via.boolean;
      break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      if (o->via.u64 > (uint64_t)INT64_MAX) {
        r->kind = TW__RAW_INT_BIG;
      } else {
        r->kind = TW__RAW_INT;
        r->u.i = (int64_t)o->via.u64;
      }
      break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      r->kind = TW__RAW_INT;
      r->u.i = o->via.i64;
      break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      r->kind = TW__RAW_FLOAT;
      r->u.d = o->via.f64;
      break;
    case MSGPACK_OBJECT_STR:
      r->kind = TW__RAW_STR;
      r->len = o->via.str.size;
      r->u.s = o->via.str.ptr;
      break;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
      r->kind = TW__RAW_NESTED;
      break;
    case MSGPACK_OBJECT_EXT:
      r->kind = TW__RAW_OTHER;
      if (o->via.ext.type == -1 && timestamp_ext(&o->via.ext, r) == 0) r->kind = TW__RAW_TIMESTAMP;
      break;
    default:
      r->kind = TW__RAW_OTHER;
      break;
  }
}

int tw_decode_msgpack(const tw_schema_t *schema, const char *data, size_t len, tw_event_t *out,
                      tw_decode_error_t *err) {
  msgpack_zone *zone = NULL;
  tw__raw_event_t raw;
  size_t obj_len = 0;
  int rc;
  out->present = 0;
  if (len == 0) {
    rc = tw__decode_fail(err, TW_EPARSE, "invalid_msgpack", "", "empty msgpack input");
    goto fail;
  }
  unsigned char b0 = (unsigned char)data[0];
  if (!((b0 & 0xf0) == 0x80 || b0 == 0xde || b0 == 0xdf)) {
    rc = tw__decode_fail(err, TW_EPARSE, "not_an_object", "",
                         "the event must be a msgpack map (first byte 0x%02x)", b0);
    goto fail;
  }
  uint64_t n_keys = (b0 & 0xf0) == 0x80                    ? (uint64_t)(b0 & 0x0f)
                    : len >= 5 || (b0 == 0xde && len >= 3) ? be(data + 1, b0 == 0xde ? 2 : 4)
                                                           : 0;
  if (n_keys > TW_EVENT_MAX_KEYS) {
    rc = tw__decode_fail(err, TW_ETOOBIG, "too_many_keys", "",
                         "the event declares %llu keys; at most %d allowed",
                         (unsigned long long)n_keys, TW_EVENT_MAX_KEYS);
    goto fail;
  }
  rc = tw_msgpack_frame(data, len, &obj_len, err);
  if (rc == TW_EAGAIN) {
    rc = tw__decode_fail(err, TW_EPARSE, "invalid_msgpack", "",
                         "the msgpack object is truncated (%zu bytes given)", len);
    goto fail;
  }
  if (rc != 0) goto fail; /* err filled by the frame walker */
  if (obj_len != len) {
    rc = tw__decode_fail(err, TW_EPARSE, "invalid_msgpack", "",
                         "%zu bytes follow the msgpack object", len - obj_len);
    goto fail;
  }
  zone = thread_zone();
  if (zone == NULL) {
    rc = tw__decode_fail(err, TW_ENOMEM, "invalid_msgpack", "", "out of memory for the zone");
    goto fail;
  }
  msgpack_object root;
  size_t off = 0;
  msgpack_unpack_return ur = msgpack_unpack(data, len, &off, zone, &root);
  if (ur != MSGPACK_UNPACK_SUCCESS || root.type != MSGPACK_OBJECT_MAP) {
    rc = tw__decode_fail(err, ur == MSGPACK_UNPACK_NOMEM_ERROR ? TW_ENOMEM : TW_EPARSE,
                         "invalid_msgpack", "", "msgpack-c could not decode the object (%d)",
                         (int)ur);
    goto fail;
  }
  tw__raw_begin(&raw);
  for (uint32_t i = 0; i < root.via.map.size; i++) {
    const msgpack_object_kv *kv = &root.via.map.ptr[i];
    if (kv->key.type != MSGPACK_OBJECT_STR) {
      rc = tw__decode_fail(err, TW_EPARSE, "wrong_type", "", "key %u of the event is not a string",
                           i + 1);
      goto fail;
    }
    tw__raw_t r;
    to_raw(&kv->val, &r);
    if ((rc = tw__raw_put(schema, &raw, kv->key.via.str.ptr, kv->key.via.str.size, &r, err)) != 0)
      goto fail;
  }
  rc = tw__event_validate(schema, &raw, out, err);
  msgpack_zone_clear(zone);
  return rc;
fail:
  if (zone != NULL) msgpack_zone_clear(zone);
  out->present = 0;
  return rc;
}
