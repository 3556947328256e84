/*
 * test_nats_ids.c: what `send --nats` reads from a record to route and deduplicate it
 * (tw_nats_record_ids, tw_nats_partition): event_id and institution_id from JSON and msgpack; an
 * id that is absent, not a string, empty, too long or not printable ASCII (it would break the
 * Nats-Msg-Id header line) comes back empty; broken records give empty ids and never crash; the
 * partition is the engine's shard hash. No server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "tw_nats.h"
#include "tw_pipeline.h"

typedef struct id_case {
  const char *json;
  const char *event_id, *institution_id; /* expected */
} id_case_t;

static const id_case_t kCases[] = {
    {"{\"event_id\":\"e-1\",\"type\":\"payment\",\"institution_id\":\"52440106MA5CQ0000X\"}", "e-1",
     "52440106MA5CQ0000X"},
    {"{\"institution_id\":\"I\"}", "", "I"},
    {"{\"event_id\":7,\"institution_id\":null}", "", ""},
    {"{\"event_id\":\"\",\"institution_id\":\"I\"}", "", "I"},
    {"{\"event_id\":\"a b\",\"institution_id\":\"I\"}", "", "I"},         /* space */
    {"{\"event_id\":\"a\\r\\nX: y\",\"institution_id\":\"I\"}", "", "I"}, /* header injection */
    {"{\"event_id\":\"\\u4e2d\",\"institution_id\":\"I\"}", "", "I"},     /* not ASCII */
    {"{\"event_id\":\"e\",\"event_id\":\"f\",\"institution_id\":\"I\"}", "",
     ""}, /* duplicate key */
    {"[\"event_id\",\"e\"]", "", ""},
    {"{\"event_id\":\"e\",", "", ""},
    {"", "", ""},
    {"not json", "", ""},
};

static void test_json_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kCases / sizeof kCases[0]; i++) {
    char ev[TW_NATS_ID_MAX + 1], inst[TW_NATS_ID_MAX + 1];
    tw_nats_record_ids(kCases[i].json, strlen(kCases[i].json), TW_FORMAT_JSONL, ev, inst);
    if (strcmp(ev, kCases[i].event_id) != 0 || strcmp(inst, kCases[i].institution_id) != 0)
      fail_msg("case %zu %s: got '%s' '%s', want '%s' '%s'", i, kCases[i].json, ev, inst,
               kCases[i].event_id, kCases[i].institution_id);
  }
}

static void test_length_bound(void **state) {
  (void)state;
  char rec[512], ev[TW_NATS_ID_MAX + 1], inst[TW_NATS_ID_MAX + 1], id[TW_NATS_ID_MAX + 2];
  memset(id, 'x', sizeof id - 1);
  id[TW_NATS_ID_MAX] = '\0'; /* exactly the bound: kept */
  snprintf(rec, sizeof rec, "{\"event_id\":\"%s\",\"institution_id\":\"I\"}", id);
  tw_nats_record_ids(rec, strlen(rec), TW_FORMAT_AUTO, ev, inst);
  assert_int_equal(strlen(ev), TW_NATS_ID_MAX);
  id[TW_NATS_ID_MAX] = 'x'; /* one more: dropped */
  id[TW_NATS_ID_MAX + 1] = '\0';
  snprintf(rec, sizeof rec, "{\"event_id\":\"%s\",\"institution_id\":\"I\"}", id);
  tw_nats_record_ids(rec, strlen(rec), TW_FORMAT_AUTO, ev, inst);
  assert_string_equal(ev, "");
  assert_string_equal(inst, "I");
}

static void test_msgpack(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  msgpack_pack_str_with_body(&pk, "type", 4);
  msgpack_pack_str_with_body(&pk, "refund", 6);
  msgpack_pack_str_with_body(&pk, "institution_id", 14);
  msgpack_pack_str_with_body(&pk, "52110105ER500000J6", 18);
  msgpack_pack_str_with_body(&pk, "event_id", 8);
  msgpack_pack_str_with_body(&pk, "m-9", 3);
  char ev[TW_NATS_ID_MAX + 1], inst[TW_NATS_ID_MAX + 1];
  tw_nats_record_ids(sb.data, sb.size, TW_FORMAT_AUTO, ev, inst); /* 0x83: detected */
  assert_string_equal(ev, "m-9");
  assert_string_equal(inst, "52110105ER500000J6");
  /* Cut short: no ids, no read past the end (ASan). */
  tw_nats_record_ids(sb.data, sb.size - 2, TW_FORMAT_MSGPACK, ev, inst);
  assert_string_equal(ev, "");
  msgpack_sbuffer_destroy(&sb);
}

static void test_partition_is_the_shard_hash(void **state) {
  (void)state;
  const char *codes[] = {"5244010602F000000W", "52110105ER500000J6", "I", ""};
  for (size_t i = 0; i < 4; i++)
    for (int p = 1; p <= 12; p++) {
      int k = tw_nats_partition(codes[i], strlen(codes[i]), p);
      assert_int_equal(k, tw_key_shard(codes[i], strlen(codes[i]), p));
      assert_true(k >= 0 && k < p);
    }
  /* Pinned to FNV-1a 64 as specified (offset basis 14695981039346656037; computed independently
   * in Python), so a change of the hash (which would re-partition every stream) is seen. */
  assert_int_equal(tw_nats_partition("5244010602F000000W", 18, 4), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_table),
      cmocka_unit_test(test_length_bound),
      cmocka_unit_test(test_msgpack),
      cmocka_unit_test(test_partition_is_the_shard_hash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
