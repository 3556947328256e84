/*
 * test_shard_route.c: tw_shard_of reads the top-level institution_id of a raw record the way the
 * decoder does, in both formats, so every event of an institution reaches the same shard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "tw_shards.h"

#define N 16
#define CODE "52440106MJL176301K"

static int route_json(const char *json) {
  tw_record_t r;
  memset(&r, 0, sizeof r);
  r.data = json;
  r.len_bytes = r.full_len_bytes = strlen(json);
  r.format = TW_FORMAT_JSONL;
  return tw_shard_of(&r, N);
}

/* A msgpack map {"event_id":"e","institution_id":CODE} with the key written as str8 when
 * wide_key, and the map header as map16 when wide_map. */
static int route_msgpack(int wide_key, int wide_map, int id_first) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (wide_map) {
    unsigned char h[3] = {0xde, 0x00, 0x02};
    msgpack_sbuffer_write(&sb, (const char *)h, 3);
  } else {
    msgpack_pack_map(&pk, 2);
  }
  for (int i = 0; i < 2; i++) {
    if ((i == 0) == (id_first != 0)) {
      if (wide_key) {
        unsigned char h[2] = {0xd9, 14};
        msgpack_sbuffer_write(&sb, (const char *)h, 2);
        msgpack_sbuffer_write(&sb, "institution_id", 14);
      } else {
        msgpack_pack_str_with_body(&pk, "institution_id", 14);
      }
      msgpack_pack_str_with_body(&pk, CODE, 18);
    } else {
      msgpack_pack_str_with_body(&pk, "event_id", 8);
      msgpack_pack_map(&pk, 1); /* a nested map with the same key must not be read */
      msgpack_pack_str_with_body(&pk, "institution_id", 14);
      msgpack_pack_str_with_body(&pk, "decoy", 5);
    }
  }
  tw_record_t r;
  memset(&r, 0, sizeof r);
  r.data = sb.data;
  r.len_bytes = r.full_len_bytes = sb.size;
  r.format = TW_FORMAT_MSGPACK;
  int shard = tw_shard_of(&r, N);
  msgpack_sbuffer_destroy(&sb);
  return shard;
}

static void test_json_forms_agree(void **state) {
  (void)state;
  int want = route_json("{\"institution_id\":\"" CODE "\"}");
  assert_int_equal(route_json("{ \"event_id\" : \"x\", \"institution_id\" :\t\"" CODE "\" }"),
                   want);
  assert_int_equal(
      route_json("{\"meta\":{\"institution_id\":\"decoy\"},\"institution_id\":\"" CODE "\"}"),
      want);
  assert_int_equal(route_json("{\"text\":\"say \\\"institution_id\\\": \\\"decoy\\\"\","
                              "\"institution_id\":\"" CODE "\"}"),
                   want);
  assert_int_equal(route_json("{\"institution_id\":\"\\u00352440106MJL176301K\"}"), want);
  assert_int_equal(route_json("{\"list\":[\"institution_id\",{\"institution_id\":\"d\"}],"
                              "\"institution_id\":\"" CODE "\"}"),
                   want);
}

static void test_msgpack_agrees_with_json(void **state) {
  (void)state;
  int want = route_json("{\"institution_id\":\"" CODE "\"}");
  for (int wide_key = 0; wide_key < 2; wide_key++)
    for (int wide_map = 0; wide_map < 2; wide_map++)
      for (int first = 0; first < 2; first++)
        assert_int_equal(route_msgpack(wide_key, wide_map, first), want);
}

static void test_without_id_goes_to_shard_zero(void **state) {
  (void)state;
  assert_int_equal(route_json("{\"event_id\":\"x\"}"), 0);
  assert_int_equal(route_json("not json at all"), 0);
  assert_int_equal(route_json("{\"institution_id\":42}"), 0);
  assert_int_equal(route_json("{\"institution_id\":\"unterminated"), 0);
  tw_record_t r;
  memset(&r, 0, sizeof r);
  r.data = "{\"institution_id\":\"" CODE "\"}";
  r.len_bytes = r.full_len_bytes = strlen(r.data);
  r.format = TW_FORMAT_JSONL;
  r.flags = TW_REC_TRUNCATED;
  assert_int_equal(tw_shard_of(&r, N), 0);
  r.flags = 0;
  assert_int_equal(tw_shard_of(&r, 1), 0);
}

static void test_spreads_institutions(void **state) {
  (void)state;
  int seen[N] = {0};
  char json[128];
  for (int i = 0; i < 1000; i++) {
    snprintf(json, sizeof json, "{\"institution_id\":\"52440106MJL%06dX\"}", i);
    seen[route_json(json)]++;
  }
  for (int k = 0; k < N; k++) assert_true(seen[k] > 1000 / N / 3); /* no empty or starved shard */
}

/* Keys are placed by FNV-1a 64 as specified (offset basis 14695981039346656037, prime
 * 1099511628211), computed independently in Python, so an outside producer can agree, and a
 * change of the hash (which would move every key of every sharded state) is seen. */
static void test_hash_is_fnv1a64(void **state) {
  (void)state;
  assert_int_equal(tw_key_shard("5244010602F000000W", 18, 4), 2);
  assert_int_equal(tw_key_shard("", 0, 7), (int)(14695981039346656037ULL % 7));
  assert_int_equal(tw_key_shard("a", 1, 1000), (int)(0xaf63dc4c8601ec8cULL % 1000));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_forms_agree),
      cmocka_unit_test(test_msgpack_agrees_with_json),
      cmocka_unit_test(test_without_id_goes_to_shard_zero),
      cmocka_unit_test(test_spreads_institutions),
      cmocka_unit_test(test_hash_is_fnv1a64),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
