/*
 * test_decode.c: the JSON and msgpack decoders against the shipped schema.
 *
 * One table of JSON lines with the expected reason and field (or acceptance) runs through
 * tw_decode_json and, converted to msgpack by this test, through tw_decode_msgpack, so the
 * shared validation layer is held to the same answers for both formats. Then the cases from
 * the field (005 invalid UTF-8, 006a-e hostile msgpack, 007 numbers, 009 time zones), copied
 * into tests/data with a valid institution code (see tests/data/README.md), and msgpack-only
 * forms (timestamp extension, binary keys, uint64 beyond int64, a 10 MB string).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <msgpack.h>

#include "tw_code.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_schema.h"

/* The shared cases' "52440106MJL17630G" has 17 characters; this is it plus its check char. */
#define CODE "52440106MJL17630G2"
#define ENV                                                                              \
  "\"event_id\":\"e-1\",\"ts\":\"2025-03-01T10:00:00+08:00\",\"institution_id\":\"" CODE \
  "\",\"region\":\"440106\""
#define PAY_REST                                                                                   \
  "\"student_id\":\"S1\",\"course_id\":\"C1\",\"class_hours\":20,\"service_days\":30,\"channel\":" \
  "\"supervised\""
#define PAY(amount) "{" ENV ",\"type\":\"payment\"," PAY_REST ",\"amount_fen\":" amount "}"
#define INST(action) "{" ENV ",\"type\":\"institution\",\"action\":" action "}"

typedef struct fixture {
  tw_schema_t *schema;
  tw_event_t ev;
} fixture_t;

static char g_path[4096];

static const char *source_path(const char *rel) {
  const char *root = getenv("TW_SOURCE_DIR");
  snprintf(g_path, sizeof g_path, "%s/%s", root ? root : TW_SOURCE_DIR, rel);
  return g_path;
}

static int setup(void **state) {
  fixture_t *fx = calloc(1, sizeof *fx);
  tw_schema_error_t err;
  if (fx == NULL) return -1;
  if (tw_schema_load(source_path("rules/packs/schema.yaml"), &fx->schema, &err) != 0) {
    fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
    free(fx);
    return -1;
  }
  if (tw_event_init(&fx->ev) != 0) {
    tw_schema_free(fx->schema);
    free(fx);
    return -1;
  }
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture_t *fx = *state;
  tw_event_fini(&fx->ev);
  tw_schema_free(fx->schema);
  free(fx);
  return 0;
}

/* ---- JSON → msgpack, to run the same table through both decoders ---- */

static void pack_json(msgpack_packer *pk, const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *e;
      msgpack_pack_map(pk, json_object_size(v));
      json_object_foreach((json_t *)v, k, e) {
        msgpack_pack_str_with_body(pk, k, strlen(k));
        pack_json(pk, e);
      }
      break;
    }
    case JSON_ARRAY: {
      size_t i;
      json_t *e;
      msgpack_pack_array(pk, json_array_size(v));
      json_array_foreach(v, i, e) pack_json(pk, e);
      break;
    }
    case JSON_STRING:
      msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
      break;
    case JSON_INTEGER:
      msgpack_pack_int64(pk, json_integer_value(v));
      break;
    case JSON_REAL:
      msgpack_pack_double(pk, json_real_value(v));
      break;
    case JSON_TRUE:
      msgpack_pack_true(pk);
      break;
    case JSON_FALSE:
      msgpack_pack_false(pk);
      break;
    default:
      msgpack_pack_nil(pk);
      break;
  }
}

static const struct {
  const char *line;
  const char *reason; /* NULL: accepted */
  const char *field;
  int json_only; /* the error is found by the JSON parser and has no msgpack form */
} kCases[] = {
    {PAY("500000"), NULL, NULL, 0},
    {PAY("0"), NULL, NULL, 0},
    {PAY("9223372036854775807"), NULL, NULL, 0},
    {PAY("1e6"), "not_integer", "amount_fen", 0},
    {PAY("1000000.0"), "not_integer", "amount_fen", 0},
    {PAY("5.0E5"), "not_integer", "amount_fen", 0},
    {PAY("\"500000\""), "wrong_type", "amount_fen", 0},
    {PAY("true"), "wrong_type", "amount_fen", 0},
    {PAY("[1]"), "wrong_type", "amount_fen", 0},
    {PAY("-100"), "out_of_range", "amount_fen", 0},
    {PAY("9223372036854775808"), "out_of_range", "amount_fen", 1},
    {PAY("-9223372036854775809"), "out_of_range", "amount_fen", 1},
    {PAY("1e400"), "out_of_range", "amount_fen", 1},
    {PAY("null"), "missing_field", "amount_fen", 0},
    {"{" ENV ",\"type\":\"payment\"," PAY_REST "}", "missing_field", "amount_fen", 0},
    {"{" ENV ",\"type\":\"payment\",\"amount_fen\":1,\"class_hours\":100001,\"student_id\":\"S\","
     "\"course_id\":\"C\",\"service_days\":1,\"channel\":\"supervised\"}",
     "out_of_range", "class_hours", 0},
    {"{" ENV ",\"type\":\"payment\",\"amount_fen\":1,\"class_hours\":-1,\"student_id\":\"S\","
     "\"course_id\":\"C\",\"service_days\":1,\"channel\":\"supervised\"}",
     "out_of_range", "class_hours", 0},
    {"{" ENV ",\"type\":\"payment\",\"amount_fen\":1,\"class_hours\":2,\"student_id\":\"S\","
     "\"course_id\":\"C\",\"service_days\":1,\"channel\":\"cash\"}",
     "bad_enum", "channel", 0},
    {"{" ENV ",\"type\":\"payment\",\"amount_fen\":1,\"class_hours\":2,\"student_id\":\"S\","
     "\"course_id\":\"C\",\"service_days\":1,\"channel\":\"supervised\",\"list_price_fen\":2.5}",
     "not_integer", "list_price_fen", 0},
    {INST("\"close\""), NULL, NULL, 0},
    {INST("\"license_revoked\""), NULL, NULL, 0},
    {INST("\"hire\""), "bad_enum", "action", 0}, /* a staff action, not an institution one */
    {INST("3"), "wrong_type", "action", 0},
    {"{" ENV ",\"type\":\"staff\",\"staff_id\":\"T1\",\"action\":\"wage_arrears\"}", NULL, NULL, 0},
    {"{" ENV ",\"type\":\"escrow\",\"action\":\"release\",\"amount_fen\":100}", NULL, NULL, 0},
    {"{" ENV ",\"type\":\"refund\",\"request_id\":\"R\",\"student_id\":\"S\",\"amount_fen\":1,"
     "\"status\":\"paid\"}",
     NULL, NULL, 0},
    {"{" ENV ",\"type\":\"consumption\",\"student_id\":\"S\",\"course_id\":\"C\",\"amount_fen\":1,"
     "\"class_hours\":1}",
     NULL, NULL, 0},
    {"{" ENV
     ",\"type\":\"enrollment\",\"student_id\":\"S\",\"course_id\":\"C\",\"action\":\"enroll\","
     "\"course_title\":\"\xe5\xb0\x8f\xe5\x8d\x87\xe5\x88\x9d\"}",
     NULL, NULL, 0},
    {"{" ENV ",\"type\":\"complaint\",\"complaint_id\":\"K\",\"category\":\"refund\"}", NULL, NULL,
     0},
    {"{" ENV ",\"type\":\"refund_request\"}", "unknown_type", "type", 0},
    {"{" ENV ",\"type\":\"alert\",\"rule\":\"r\",\"severity\":\"high\"}", "reserved_type", "type",
     0},
    {"{" ENV "}", "missing_field", "type", 0},
    {"{" ENV ",\"type\":7}", "wrong_type", "type", 0},
    {"{\"type\":\"institution\",\"action\":\"open\"}", "missing_field", "event_id", 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":\"2025-03-01T10:00:00\",\"institution_"
     "id\":"
     "\"" CODE "\",\"region\":\"440106\",\"action\":\"open\"}",
     "bad_timestamp", "ts", 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":1.5e12,\"institution_id\":"
     "\"" CODE "\",\"region\":\"440106\",\"action\":\"open\"}",
     "bad_timestamp", "ts", 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":1740844800000,\"institution_id\":"
     "\"" CODE "\",\"region\":\"440106\",\"action\":\"open\"}",
     NULL, NULL, 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":\"2025-03-01T10:00:00Z\",\"institution_"
     "id\":"
     "\"52440106MJL17630G\",\"region\":\"440106\",\"action\":\"open\"}",
     "bad_credit_code", "institution_id", 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":\"2025-03-01T10:00:00Z\",\"institution_"
     "id\":"
     "\"52440106MJL17630G3\",\"region\":\"440106\",\"action\":\"open\"}",
     "bad_credit_code", "institution_id", 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":\"2025-03-01T10:00:00Z\",\"institution_"
     "id\":"
     "\"" CODE "\",\"region\":\"990106\",\"action\":\"open\"}",
     "bad_region", "region", 0},
    {"{\"event_id\":\"e\",\"type\":\"institution\",\"ts\":\"2025-03-01T10:00:00Z\",\"institution_"
     "id\":"
     "\"" CODE "\",\"region\":440106,\"action\":\"open\"}",
     "wrong_type", "region", 0},
    {"{\"event_id\":\"0123456789012345678901234567890123456789012345678901234567890123X\","
     "\"type\":\"institution\",\"ts\":0,\"institution_id\":\"" CODE "\",\"region\":\"440106\","
     "\"action\":\"open\"}",
     "too_long", "event_id", 0},
    {INST("\"open\",\"unknown_key\":{\"a\":[1,2,{\"b\":null}]},\"other\":1.5"), NULL, NULL, 0},
    {INST("\"open\",\"x\":[[[[[[[[1]]]]]]]]"), "too_deep", "", 0},
    {INST("\"open\",\"action\":\"close\""), "duplicate_key", "action", 0},
    {"[1,2]", "not_an_object", "", 0},
    {"\"payment\"", "invalid_json", "", 1},
    {"{\"event_id\": \"e\",", "invalid_json", "", 1},
    {"{} {}", "invalid_json", "", 1},
    {"", "invalid_json", "", 1},
};

static void check_result(int rc, const tw_decode_error_t *err, size_t i, const char *fmt) {
  if (kCases[i].reason == NULL) {
    if (rc != 0)
      fail_msg("%s case %zu rejected: %s (%s): %s", fmt, i, err->reason, err->field, err->message);
    return;
  }
  if (rc == 0) fail_msg("%s case %zu accepted; want %s", fmt, i, kCases[i].reason);
  if (strcmp(err->reason, kCases[i].reason) != 0 || strcmp(err->field, kCases[i].field) != 0)
    fail_msg("%s case %zu: got %s/%s (%s), want %s/%s", fmt, i, err->reason, err->field,
             err->message, kCases[i].reason, kCases[i].field);
  /* every message names the field it is about */
  if (err->field[0] != '\0' && strstr(err->message, err->field) == NULL)
    fail_msg("%s case %zu: message '%s' does not name '%s'", fmt, i, err->message, err->field);
}

static void test_table_json(void **state) {
  fixture_t *fx = *state;
  for (size_t i = 0; i < sizeof kCases / sizeof kCases[0]; i++) {
    tw_decode_error_t err;
    memset(&err, 0, sizeof err);
    int rc = tw_decode_json(fx->schema, kCases[i].line, strlen(kCases[i].line), &fx->ev, &err);
    check_result(rc, &err, i, "json");
    if (rc != 0) assert_int_equal(fx->ev.present, 0);
  }
}

static void test_table_msgpack(void **state) {
  fixture_t *fx = *state;
  for (size_t i = 0; i < sizeof kCases / sizeof kCases[0]; i++) {
    if (kCases[i].json_only) continue;
    json_error_t je;
    /* duplicates must survive conversion: build from the parsed tree, which has dropped them,
     * only when the case is not about duplicates */
    if (kCases[i].reason && strcmp(kCases[i].reason, "duplicate_key") == 0) continue;
    json_t *j = json_loads(kCases[i].line, JSON_DECODE_ANY, &je);
    assert_non_null(j);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_json(&pk, j);
    json_decref(j);
    tw_decode_error_t err;
    memset(&err, 0, sizeof err);
    int rc = tw_decode_msgpack(fx->schema, sb.data, sb.size, &fx->ev, &err);
    msgpack_sbuffer_destroy(&sb);
    check_result(rc, &err, i, "msgpack");
  }
}

static void test_accepted_values(void **state) {
  fixture_t *fx = *state;
  tw_event_t *ev = &fx->ev;
  tw_decode_error_t err;
  const char *line = "{" ENV ",\"type\":\"payment\"," PAY_REST
                     ",\"amount_fen\":9007199254740993,"
                     "\"list_price_fen\":100}";
  assert_int_equal(tw_decode_json(fx->schema, line, strlen(line), ev, &err), 0);
  const tw_schema_t *s = fx->schema;
  assert_int_equal(ev->type, tw_schema_type_id(s, "payment", 7));
  assert_int_equal(ev->ts_ms, 1740794400000);
  tw_value_t v = tw_event_get(ev, TW_SLOT_TS);
  assert_int_equal(v.kind, TW_V_TIME);
  assert_int_equal(v.u.i, 1740794400000);
  v = tw_event_get(ev, TW_SLOT_TYPE);
  assert_int_equal(v.kind, TW_V_STR);
  assert_ptr_equal(v.u.s.ptr, s->types[ev->type].name);
  v = tw_event_get(ev, tw_schema_field_slot(s, "amount_fen", 10));
  assert_int_equal(v.kind, TW_V_MONEY);
  assert_true(v.u.i == 9007199254740993LL); /* 2^53 + 1, exact */
  v = tw_event_get(ev, tw_schema_field_slot(s, "class_hours", 11));
  assert_int_equal(v.kind, TW_V_INT);
  assert_int_equal(v.u.i, 20);
  v = tw_event_get(ev, TW_SLOT_INSTITUTION_ID);
  assert_int_equal(v.kind, TW_V_STR);
  assert_int_equal(v.u.s.len, 18);
  assert_string_equal(v.u.s.ptr, CODE);
  assert_true(v.u.s.ptr >= ev->arena && v.u.s.ptr < ev->arena + ev->arena_cap);
  v = tw_event_get(ev, tw_schema_field_slot(s, "channel", 7));
  assert_string_equal(v.u.s.ptr, "supervised");
  v = tw_event_get(ev, tw_schema_field_slot(s, "student_id", 10));
  assert_string_equal(v.u.s.ptr, "S1");
  assert_int_equal(v.u.s.ptr[v.u.s.len], '\0');
  assert_true(ev->present & (1ull << tw_schema_field_slot(s, "list_price_fen", 14)));
  /* absent optional field and a field of another type read as null */
  const char *line2 = PAY("1");
  assert_int_equal(tw_decode_json(fx->schema, line2, strlen(line2), ev, &err), 0);
  assert_int_equal(tw_event_get(ev, tw_schema_field_slot(s, "list_price_fen", 14)).kind, TW_V_NULL);
  assert_int_equal(tw_event_get(ev, tw_schema_field_slot(s, "text", 4)).kind, TW_V_NULL);
  /* a key of another type is ignored, not stored */
  const char *line3 = INST("\"open\",\"amount_fen\":5");
  assert_int_equal(tw_decode_json(fx->schema, line3, strlen(line3), ev, &err), 0);
  assert_int_equal(tw_event_get(ev, tw_schema_field_slot(s, "amount_fen", 10)).kind, TW_V_NULL);
}

/* Reads a tests/data file whole into a static buffer (nothing to leak when an assert fails). */
static char g_data[1 << 20];

static char *read_data(const char *name, size_t *len) {
  char rel[256];
  snprintf(rel, sizeof rel, "tests/data/%s", name);
  FILE *f = fopen(source_path(rel), "rb");
  if (f == NULL) return NULL;
  *len = fread(g_data, 1, sizeof g_data, f);
  fclose(f);
  return g_data;
}

/* Calls cb on each line of a tests/data JSONL file. */
static int each_line(const char *name, void (*cb)(fixture_t *, int, const char *, size_t),
                     fixture_t *fx) {
  size_t len;
  char *buf = read_data(name, &len);
  if (buf == NULL) return -1;
  int n = 0;
  for (size_t i = 0; i < len;) {
    char *nl = memchr(buf + i, '\n', len - i);
    size_t end = nl ? (size_t)(nl - buf) : len;
    cb(fx, n++, buf + i, end - i);
    i = end + 1;
  }
  return n;
}

static void case005_line(fixture_t *fx, int n, const char *line, size_t len) {
  tw_decode_error_t err;
  int rc = tw_decode_json(fx->schema, line, len, &fx->ev, &err);
  /* c-bad-0 ("退费难跑") is well-formed UTF-8 despite its name, so it is accepted; c-bad-1..4
   * carry an overlong, a surrogate, 0xff 0xfe and a truncated sequence. */
  if (n >= 1 && n <= 4) {
    assert_int_equal(rc, TW_EPARSE);
    assert_string_equal(err.reason, "invalid_utf8");
    assert_string_equal(err.field, "text");
  } else {
    assert_int_equal(rc, 0); /* c-bad-0 and c-good */
    tw_value_t v = tw_event_get(&fx->ev, tw_schema_field_slot(fx->schema, "text", 4));
    assert_int_equal(v.kind, TW_V_STR);
    assert_non_null(strstr(v.u.s.ptr, "\xe9\x80\x80\xe8\xb4\xb9")); /* 退费 */
  }
}

static void test_case005_invalid_utf8(void **state) {
  assert_int_equal(tw_credit_code_check_char("52440106MJL17630G"), '2');
  assert_true(tw_credit_code_valid(CODE, 18));
  assert_int_equal(each_line("005-invalid-utf8.jsonl", case005_line, *state), 6);
}

static void case007_line(fixture_t *fx, int n, const char *line, size_t len) {
  static const char *const kReason[] = {
      "not_integer", "wrong_type", "out_of_range", "out_of_range", NULL, "not_integer", NULL};
  tw_decode_error_t err;
  int rc = tw_decode_json(fx->schema, line, len, &fx->ev, &err);
  if (kReason[n] == NULL) {
    assert_int_equal(rc, 0);
    tw_value_t v = tw_event_get(&fx->ev, tw_schema_field_slot(fx->schema, "amount_fen", 10));
    assert_int_equal(v.kind, TW_V_MONEY);
    assert_true(v.u.i == (n == 4 ? 9007199254740993LL : 500000));
  } else {
    assert_int_not_equal(rc, 0);
    assert_string_equal(err.reason, kReason[n]);
    assert_string_equal(err.field, "amount_fen");
  }
}

static void test_case007_numbers(void **state) {
  assert_int_equal(each_line("007-numbers.jsonl", case007_line, *state), 7);
}

static void case009_line(fixture_t *fx, int n, const char *line, size_t len) {
  static const int64_t kMs[] = {1740843000000, 1740846600000, 1740844799999, 1740844800000};
  tw_decode_error_t err;
  assert_int_equal(tw_decode_json(fx->schema, line, len, &fx->ev, &err), 0);
  assert_int_equal(fx->ev.ts_ms, kMs[n]);
}

static void test_case009_times(void **state) {
  assert_int_equal(each_line("009-time-zones.jsonl", case009_line, *state), 4);
}

static long max_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static void test_case006_hostile_msgpack(void **state) {
  fixture_t *fx = *state;
  static const struct {
    const char *file, *reason;
  } kFiles[] = {
      {"006a-truncated-map.msgpack", "invalid_msgpack"},
      {"006b-str32-4GiB-claim.msgpack", "too_long"},
      {"006c-deep-nesting.msgpack", "not_an_object"},
      {"006d-map32-huge-count.msgpack", "too_many_keys"},
      {"006e-ext-garbage.msgpack", "too_long"},
  };
  long rss0 = max_rss_kib();
  for (size_t i = 0; i < 5; i++) {
    size_t len = 0;
    char *buf = read_data(kFiles[i].file, &len);
    assert_non_null(buf);
    tw_decode_error_t err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = tw_decode_msgpack(fx->schema, buf, len, &fx->ev, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_not_equal(rc, 0);
    if (strcmp(err.reason, kFiles[i].reason) != 0)
      fail_msg("%s: %s (%s), want %s", kFiles[i].file, err.reason, err.message, kFiles[i].reason);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 50.0);
  }
  /* the same bytes wrapped in a map, so the frame walker (not the map check) must refuse them */
  static const char kDeep[] = "\x81\xa1x\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x01";
  tw_decode_error_t err;
  assert_int_equal(tw_decode_msgpack(fx->schema, kDeep, sizeof kDeep - 1, &fx->ev, &err),
                   TW_ETOOBIG);
  assert_string_equal(err.reason, "too_deep");
  static const char kHugeMap[] = "\x81\xa1x\xdf\x7f\xff\xff\xff\xa1\x61";
  assert_int_equal(tw_decode_msgpack(fx->schema, kHugeMap, sizeof kHugeMap - 1, &fx->ev, &err),
                   TW_ETOOBIG);
  assert_true(max_rss_kib() - rss0 < 16 * 1024); /* no allocation from declared sizes */
}

/* msgpack builders for the msgpack-only forms */
typedef struct mp {
  msgpack_sbuffer sb;
  msgpack_packer pk;
} mp_t;

static void mp_begin(mp_t *m, size_t n_keys) {
  msgpack_sbuffer_init(&m->sb);
  msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
  msgpack_pack_map(&m->pk, n_keys);
}

static void mp_str(mp_t *m, const char *k, const char *v, size_t vlen) {
  msgpack_pack_str_with_body(&m->pk, k, strlen(k));
  msgpack_pack_str_with_body(&m->pk, v, vlen);
}

static void mp_key(mp_t *m, const char *k) {
  msgpack_pack_str_with_body(&m->pk, k, strlen(k));
}

/* institution event with everything but ts (and extra keys packed by the caller) */
static void mp_inst(mp_t *m, size_t extra) {
  mp_begin(m, 5 + extra);
  mp_str(m, "event_id", "e", 1);
  mp_str(m, "type", "institution", 11);
  mp_str(m, "institution_id", CODE, 18);
  mp_str(m, "region", "440106", 6);
  mp_str(m, "action", "open", 4);
}

static int mp_decode(fixture_t *fx, mp_t *m, tw_decode_error_t *err) {
  int rc = tw_decode_msgpack(fx->schema, m->sb.data, m->sb.size, &fx->ev, err);
  msgpack_sbuffer_destroy(&m->sb);
  return rc;
}

static void test_msgpack_timestamps(void **state) {
  fixture_t *fx = *state;
  tw_decode_error_t err;
  mp_t m;
  /* timestamp 32: seconds only */
  mp_inst(&m, 1);
  mp_key(&m, "ts");
  msgpack_pack_ext_with_body(&m.pk, "\x67\xc2\x30\x00", 4, -1); /* 1740779520 */
  assert_int_equal(mp_decode(fx, &m, &err), 0);
  assert_int_equal(fx->ev.ts_ms, 1740779520000);
  /* timestamp 64: nsec 999000000 in the upper 30 bits, sec 1740844799 in the lower 34 */
  uint64_t v64 = ((uint64_t)999000000 << 34) | 1740844799u;
  char b64[8];
  for (int i = 0; i < 8; i++) b64[i] = (char)(v64 >> (56 - 8 * i));
  mp_inst(&m, 1);
  mp_key(&m, "ts");
  msgpack_pack_ext_with_body(&m.pk, b64, 8, -1);
  assert_int_equal(mp_decode(fx, &m, &err), 0);
  assert_int_equal(fx->ev.ts_ms, 1740844799999);
  /* timestamp 96: nsec 32-bit, sec signed 64-bit (here before 1970) */
  char b96[12] = {0, 0, 0, 0};
  int64_t sec = -1;
  for (int i = 0; i < 8; i++) b96[4 + i] = (char)((uint64_t)sec >> (56 - 8 * i));
  b96[0] = 0x1d, b96[1] = (char)0xcd, b96[2] = 0x65, b96[3] = 0x00; /* 500000000 ns */
  mp_inst(&m, 1);
  mp_key(&m, "ts");
  msgpack_pack_ext_with_body(&m.pk, b96, 12, -1);
  assert_int_equal(mp_decode(fx, &m, &err), 0);
  assert_int_equal(fx->ev.ts_ms, -500);
  /* nsec ≥ 10^9 is not a timestamp */
  b96[0] = 0x3b, b96[1] = (char)0x9a, b96[2] = (char)0xca, b96[3] = 0x00;
  mp_inst(&m, 1);
  mp_key(&m, "ts");
  msgpack_pack_ext_with_body(&m.pk, b96, 12, -1);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  assert_string_equal(err.reason, "bad_timestamp");
  /* another extension type, or a 5-byte body, is not a time */
  mp_inst(&m, 1);
  mp_key(&m, "ts");
  msgpack_pack_ext_with_body(&m.pk, "\x67\xc2\x30\x00", 4, 7);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  assert_string_equal(err.reason, "bad_timestamp");
  assert_string_equal(err.field, "ts");
  mp_inst(&m, 1);
  mp_key(&m, "ts");
  msgpack_pack_ext_with_body(&m.pk, "\x67\xc2\x30\x00\x00", 5, -1);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  /* a string time works in msgpack too */
  mp_inst(&m, 1);
  mp_str(&m, "ts", "2025-03-01T15:59:59.999Z", 24);
  assert_int_equal(mp_decode(fx, &m, &err), 0);
  assert_int_equal(fx->ev.ts_ms, 1740844799999);
}

static void test_msgpack_only_forms(void **state) {
  fixture_t *fx = *state;
  tw_decode_error_t err;
  mp_t m;
  /* uint64 beyond int64 */
  mp_inst(&m, 2);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_key(&m, "amount_fen");
  msgpack_pack_uint64(&m.pk, 9223372036854775808ull);
  assert_int_equal(mp_decode(fx, &m, &err), 0); /* amount_fen is not an institution field */
  mp_begin(&m, 7);
  mp_str(&m, "event_id", "e", 1);
  mp_str(&m, "type", "escrow", 6);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_str(&m, "institution_id", CODE, 18);
  mp_str(&m, "region", "440106", 6);
  mp_str(&m, "action", "deposit", 7);
  mp_key(&m, "amount_fen");
  msgpack_pack_uint64(&m.pk, 9223372036854775808ull);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  assert_string_equal(err.reason, "out_of_range");
  assert_string_equal(err.field, "amount_fen");
  /* float32 money */
  mp_begin(&m, 7);
  mp_str(&m, "event_id", "e", 1);
  mp_str(&m, "type", "escrow", 6);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_str(&m, "institution_id", CODE, 18);
  mp_str(&m, "region", "440106", 6);
  mp_str(&m, "action", "deposit", 7);
  mp_key(&m, "amount_fen");
  msgpack_pack_float(&m.pk, 100.0f);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  assert_string_equal(err.reason, "not_integer");
  /* invalid UTF-8 and NUL in a msgpack str */
  mp_inst(&m, 1);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  msgpack_sbuffer_destroy(&m.sb);
  mp_begin(&m, 8);
  mp_str(&m, "event_id", "e", 1);
  mp_str(&m, "type", "complaint", 9);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_str(&m, "institution_id", CODE, 18);
  mp_str(&m, "region", "440106", 6);
  mp_str(&m, "complaint_id", "K", 1);
  mp_str(&m, "category", "refund", 6);
  mp_str(&m, "text", "\xe9\x80\x80\xed\xa0\x80", 6); /* a surrogate */
  assert_int_equal(mp_decode(fx, &m, &err), TW_EPARSE);
  assert_string_equal(err.reason, "invalid_utf8");
  assert_string_equal(err.field, "text");
  mp_begin(&m, 8);
  mp_str(&m, "event_id", "e", 1);
  mp_str(&m, "type", "complaint", 9);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_str(&m, "institution_id", CODE, 18);
  mp_str(&m, "region", "440106", 6);
  mp_str(&m, "complaint_id", "K", 1);
  mp_str(&m, "category", "refund", 6);
  mp_str(&m, "text", "a\0b", 3);
  assert_int_equal(mp_decode(fx, &m, &err), TW_EPARSE);
  assert_string_equal(err.reason, "invalid_utf8");
  /* text over 4096 bytes */
  char *big = malloc(5000);
  memset(big, 'a', 5000);
  mp_begin(&m, 8);
  mp_str(&m, "event_id", "e", 1);
  mp_str(&m, "type", "complaint", 9);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_str(&m, "institution_id", CODE, 18);
  mp_str(&m, "region", "440106", 6);
  mp_str(&m, "complaint_id", "K", 1);
  mp_str(&m, "category", "refund", 6);
  mp_str(&m, "text", big, 4097);
  free(big);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  assert_string_equal(err.reason, "too_long");
  assert_string_equal(err.field, "text");
  /* a non-string key */
  mp_inst(&m, 2);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  msgpack_pack_int(&m.pk, 1);
  msgpack_pack_int(&m.pk, 2);
  assert_int_equal(mp_decode(fx, &m, &err), TW_EPARSE);
  assert_string_equal(err.reason, "wrong_type");
  /* duplicate key */
  mp_inst(&m, 2);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_str(&m, "action", "close", 5);
  assert_int_equal(mp_decode(fx, &m, &err), TW_EPARSE);
  assert_string_equal(err.reason, "duplicate_key");
  assert_string_equal(err.field, "action");
  /* binary where a string belongs */
  mp_begin(&m, 6);
  mp_str(&m, "event_id", "e", 1);
  mp_str(&m, "type", "institution", 11);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  mp_key(&m, "institution_id");
  msgpack_pack_bin_with_body(&m.pk, CODE, 18);
  mp_str(&m, "region", "440106", 6);
  mp_str(&m, "action", "open", 4);
  assert_int_equal(mp_decode(fx, &m, &err), TW_ESCHEMA);
  assert_string_equal(err.reason, "wrong_type");
  assert_string_equal(err.field, "institution_id");
  /* too many keys */
  mp_begin(&m, 65);
  for (int i = 0; i < 65; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    mp_str(&m, k, "v", 1);
  }
  assert_int_equal(mp_decode(fx, &m, &err), TW_ETOOBIG);
  assert_string_equal(err.reason, "too_many_keys");
  /* trailing bytes and empty input */
  mp_inst(&m, 1);
  mp_str(&m, "ts", "2025-03-01T10:00:00Z", 20);
  msgpack_pack_nil(&m.pk);
  assert_int_equal(mp_decode(fx, &m, &err), TW_EPARSE);
  assert_string_equal(err.reason, "invalid_msgpack");
  assert_int_equal(tw_decode_msgpack(fx->schema, "", 0, &fx->ev, &err), TW_EPARSE);
  /* reserved byte 0xc1 */
  assert_int_equal(tw_decode_msgpack(fx->schema, "\x81\xa1x\xc1", 4, &fx->ev, &err), TW_EPARSE);
  assert_string_equal(err.reason, "invalid_msgpack");
}

static void test_ten_megabyte_string(void **state) {
  fixture_t *fx = *state;
  tw_decode_error_t err;
  size_t n = 10u << 20;
  char *line = malloc(n + 256);
  int head = snprintf(line, 256,
                      "{" ENV
                      ",\"type\":\"complaint\",\"complaint_id\":\"K\","
                      "\"category\":\"refund\",\"text\":\"");
  memset(line + head, 'a', n);
  memcpy(line + head + n, "\"}", 2);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = tw_decode_json(fx->schema, line, (size_t)head + n + 2, &fx->ev, &err);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(rc, TW_ETOOBIG);
  assert_string_equal(err.reason, "too_long");
  assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 50);
  /* msgpack: a str32 of 10 MB inside a map */
  mp_t m;
  mp_begin(&m, 1);
  mp_str(&m, "text", line, n);
  free(line);
  rc = mp_decode(fx, &m, &err);
  assert_int_equal(rc, TW_ETOOBIG);
  assert_string_equal(err.reason, "too_long");
  /* a 4096-byte complaint text is within bounds and accepted */
  char text[4097];
  memset(text, 'z', 4096);
  text[4096] = '\0';
  char buf[8192];
  snprintf(buf, sizeof buf,
           "{" ENV
           ",\"type\":\"complaint\",\"complaint_id\":\"K\",\"category\":\"r\","
           "\"text\":\"%s\"}",
           text);
  assert_int_equal(tw_decode_json(fx->schema, buf, strlen(buf), &fx->ev, &err), 0);
  assert_int_equal(tw_event_get(&fx->ev, tw_schema_field_slot(fx->schema, "text", 4)).u.s.len,
                   4096);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_table_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_table_msgpack, setup, teardown),
      cmocka_unit_test_setup_teardown(test_accepted_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_case005_invalid_utf8, setup, teardown),
      cmocka_unit_test_setup_teardown(test_case007_numbers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_case009_times, setup, teardown),
      cmocka_unit_test_setup_teardown(test_case006_hostile_msgpack, setup, teardown),
      cmocka_unit_test_setup_teardown(test_msgpack_timestamps, setup, teardown),
      cmocka_unit_test_setup_teardown(test_msgpack_only_forms, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ten_megabyte_string, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
