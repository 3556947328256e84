/*
 * test_zmq.c: the ZeroMQ transports over ipc:// in a temporary directory: the PULL source
 * (per-message format detection, multi-line messages, truncation, positions, the edge-triggered
 * fd + "poll until 0" rule), the push core of `send` (file → PUSH → PULL, and a timeout when no
 * engine listens), and the PUB feed (a SUB with prefix "44" receives only 44xxxx topics, frames
 * intact; a subscriber that does not read makes drops that are counted, without blocking).
 * Every wait is a bounded loop of short zmq_poll/poll(2) timeouts.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include "tw_error.h"
#include "tw_push.h"
#include "tw_sink.h"
#include "tw_sink_zmq.h"
#include "tw_source.h"

static char g_dir[] = "/tmp/tw_test_zmq_XXXXXX";

#define MAX_RECS 32

typedef struct got_rec {
  char data[5000];
  size_t len;
  uint64_t full_len, offset, line;
  uint32_t flags;
  tw_format_t format;
  char origin[256];
} got_rec_t;

typedef struct collector {
  got_rec_t recs[MAX_RECS];
  size_t n;
} collector_t;

static int collect(void *ud, const tw_record_t *rec) {
  collector_t *c = ud;
  if (c->n >= MAX_RECS) return 1;
  got_rec_t *g = &c->recs[c->n++];
  g->len = rec->len_bytes;
  memcpy(g->data, rec->data, rec->len_bytes < sizeof g->data ? rec->len_bytes : sizeof g->data);
  g->full_len = rec->full_len_bytes;
  g->offset = rec->offset_bytes;
  g->line = rec->line;
  g->flags = rec->flags;
  g->format = rec->format;
  snprintf(g->origin, sizeof g->origin, "%s", rec->origin);
  return 0;
}

/* wait_records: the owner's loop as `run` will do it with libuv: wait for the fd, then poll
 * until poll returns 0. Gives up after about 5 s. */
static void wait_records(tw_source_t *src, collector_t *c, size_t want) {
  int fd = src->vt->fd(src);
  assert_true(fd >= 0);
  for (int i = 0; i < 250 && c->n < want; i++) {
    int rc;
    while ((rc = src->vt->poll(src, 2, collect, c)) > 0) {
    }
    assert_int_equal(rc, 0);
    if (c->n >= want) break;
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 20);
  }
  assert_int_equal(c->n, want);
}

static void endpoint(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "ipc://%s/%s", g_dir, name);
}

static void test_pull_source(void **state) {
  (void)state;
  char ep[512];
  endpoint(ep, sizeof ep, "pull.sock");
  const tw_source_vt_t *vt = tw_source_find("zmq-pull");
  assert_non_null(vt);
  tw_source_opts_t opts = {.format = TW_FORMAT_AUTO, .max_record_bytes = 1000};
  tw_source_t *src = NULL;
  assert_int_equal(vt->open(ep, &opts, &src), 0);
  /* Nothing sent yet: poll returns 0 without blocking. */
  collector_t *c = calloc(1, sizeof *c);
  assert_non_null(c);
  assert_int_equal(src->vt->poll(src, 10, collect, c), 0);

  void *ctx = zmq_ctx_new();
  void *push = zmq_socket(ctx, ZMQ_PUSH);
  assert_int_equal(zmq_connect(push, ep), 0);
  const char m1[] = "{\"a\":1}";
  const char m2[] = "{\"b\":2}\n\r\n{\"c\":3}\r\n"; /* a batch of lines */
  const char m3[] = "\x81\xa1k\x01";                /* msgpack {"k":1} */
  const char m4[] = "xyz";                          /* garbage: handed on as JSONL */
  char big[10000];
  memset(big, 'x', sizeof big);
  big[0] = '{';
  assert_int_equal(zmq_send(push, m1, strlen(m1), 0), (int)strlen(m1));
  assert_int_equal(zmq_send(push, m2, strlen(m2), 0), (int)strlen(m2));
  assert_int_equal(zmq_send(push, m3, 4, 0), 4);
  assert_int_equal(zmq_send(push, m4, 3, 0), 3);
  assert_int_equal(zmq_send(push, big, sizeof big, 0), (int)sizeof big);

  wait_records(src, c, 6);
  const got_rec_t *r = c->recs;
  assert_int_equal(r[0].len, 7);
  assert_memory_equal(r[0].data, m1, 7);
  assert_int_equal(r[0].line, 1);
  assert_int_equal(r[0].offset, 0);
  assert_int_equal(r[0].format, TW_FORMAT_JSONL);
  assert_string_equal(r[0].origin, ep);
  assert_memory_equal(r[1].data, "{\"b\":2}", 7);
  assert_int_equal(r[1].len, 7);
  assert_int_equal(r[1].line, 2);
  assert_int_equal(r[1].offset, 7);
  assert_memory_equal(r[2].data, "{\"c\":3}", 7);
  assert_int_equal(r[2].len, 7); /* "\r\n" stripped, the empty line skipped */
  assert_int_equal(r[2].line, 2);
  assert_int_equal(r[2].offset, 7 + 10);
  assert_int_equal(r[3].format, TW_FORMAT_MSGPACK);
  assert_int_equal(r[3].len, 4);
  assert_memory_equal(r[3].data, m3, 4);
  assert_int_equal(r[3].line, 3);
  assert_int_equal(r[4].format, TW_FORMAT_JSONL);
  assert_int_equal(r[4].len, 3);
  assert_int_equal(r[4].line, 4);
  assert_int_equal(r[5].flags, TW_REC_TRUNCATED);
  assert_int_equal(r[5].full_len, sizeof big);
  assert_int_equal(r[5].len, TW_REC_HEAD_BYTES);
  assert_memory_equal(r[5].data, big, TW_REC_HEAD_BYTES);
  assert_int_equal(r[5].line, 5);
  for (size_t i = 0; i < 5; i++) assert_int_equal(r[i].flags, 0);

  zmq_close(push);
  zmq_ctx_term(ctx);
  src->vt->close(src);
  vt->close(NULL);
  free(c);
}

static void test_pull_forced_format_and_bind_error(void **state) {
  (void)state;
  char ep[512];
  endpoint(ep, sizeof ep, "pull2.sock");
  const tw_source_vt_t *vt = tw_source_find("zmq-pull");
  tw_source_opts_t opts = {.format = TW_FORMAT_MSGPACK};
  tw_source_t *src = NULL, *again = NULL;
  assert_int_equal(vt->open(ep, &opts, &src), 0);
  assert_int_equal(vt->open("tcp://no-such-host-xyz:1", &opts, &again), TW_EZMQ);
  assert_null(again);
  assert_int_equal(vt->open("bogus://x", &opts, &again), TW_EZMQ);

  void *ctx = zmq_ctx_new();
  void *push = zmq_socket(ctx, ZMQ_PUSH);
  assert_int_equal(zmq_connect(push, ep), 0);
  assert_int_equal(zmq_send(push, "{\"a\":1}\n{\"b\":2}", 15, 0), 15);
  collector_t *c = calloc(1, sizeof *c);
  wait_records(src, c, 1); /* msgpack: one message, one record, never split on '\n' */
  assert_int_equal(c->recs[0].len, 15);
  assert_int_equal(c->recs[0].format, TW_FORMAT_MSGPACK);
  zmq_close(push);
  zmq_ctx_term(ctx);
  src->vt->close(src);
  free(c);
}

static void test_push_file_to_pull(void **state) {
  (void)state;
  char ep[512], path[512];
  endpoint(ep, sizeof ep, "send.sock");
  snprintf(path, sizeof path, "%s/events.jsonl", g_dir);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("{\"event_id\":\"p-1\"}\n\n{\"event_id\":\"p-2\"}\r\n{\"event_id\":\"p-3\"}\n", f);
  fclose(f);
  const tw_source_vt_t *vt = tw_source_find("zmq-pull");
  tw_source_t *src = NULL;
  assert_int_equal(vt->open(ep, NULL, &src), 0);

  tw_push_stats_t st;
  tw_source_opts_t fopts = {.format = TW_FORMAT_AUTO};
  /* The engine's PULL socket queues what arrives, so one thread can do both ends. */
  assert_int_equal(tw_push_file(path, &fopts, ep, 5000, &st), 0);
  assert_int_equal(st.records, 3);
  assert_int_equal(st.bytes, 3 * 18);
  assert_int_equal(st.flagged, 0);
  collector_t *c = calloc(1, sizeof *c);
  wait_records(src, c, 3);
  for (size_t i = 0; i < 3; i++) {
    char want[32];
    snprintf(want, sizeof want, "{\"event_id\":\"p-%zu\"}", i + 1);
    assert_int_equal(c->recs[i].len, strlen(want));
    assert_memory_equal(c->recs[i].data, want, strlen(want));
    assert_int_equal(c->recs[i].line, i + 1); /* one message per record */
  }

  /* msgpack files go out one object per message and are recognised by the PULL side. */
  char mp[512];
  snprintf(mp, sizeof mp, "%s/events.msgpack", g_dir);
  f = fopen(mp, "wb");
  assert_non_null(f);
  fwrite("\x81\xa1k\x01\x81\xa1k\x02", 1, 8, f);
  fclose(f);
  assert_int_equal(tw_push_file(mp, &fopts, ep, 5000, &st), 0);
  assert_int_equal(st.records, 2);
  assert_int_equal(st.bytes, 8);
  wait_records(src, c, 5);
  assert_int_equal(c->recs[3].format, TW_FORMAT_MSGPACK);
  assert_int_equal(c->recs[3].len, 4);
  assert_memory_equal(c->recs[4].data, "\x81\xa1k\x02", 4);
  src->vt->close(src);
  free(c);

  /* Nobody listening: the push gives up after the timeout instead of hanging. */
  char nobody[512];
  endpoint(nobody, sizeof nobody, "nobody.sock");
  errno = 0;
  assert_int_equal(tw_push_file(path, &fopts, nobody, 100, &st), TW_EZMQ);
  assert_int_equal(errno, EAGAIN);
  assert_int_equal(st.records, 0);
  char missing[512];
  snprintf(missing, sizeof missing, "%s/missing.jsonl", g_dir);
  assert_int_equal(tw_push_file(missing, &fopts, ep, 100, &st), TW_ENOENT);
  assert_int_equal(tw_push_file(path, &fopts, ep, 0, &st), TW_EINVAL);
}

typedef struct sent_alert {
  const char *region;
  const tw_rule_t *rule;
  const char *json;
} sent_alert_t;

static void publish(tw_sink_t *s, const char *region, const tw_rule_t *rule, const char *json) {
  tw_alert_t a;
  memset(&a, 0, sizeof a);
  a.rule = rule;
  a.region.ptr = region;
  a.region.len = (uint32_t)strlen(region);
  assert_int_equal(s->vt->write(s, &a, json, strlen(json)), 0);
}

/* recv_alert: one [topic, json] message within timeout_ms; 1 if one came, 0 if not. */
static int recv_alert(void *sub, int timeout_ms, char *topic, size_t tcap, char *json,
                      size_t jcap) {
  zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, timeout_ms) <= 0) return 0;
  int t = zmq_recv(sub, topic, tcap - 1, 0);
  assert_true(t >= 0);
  topic[t] = '\0';
  int more = 0;
  size_t sz = sizeof more;
  assert_int_equal(zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz), 0);
  assert_int_equal(more, 1);
  int j = zmq_recv(sub, json, jcap - 1, 0);
  assert_true(j >= 0);
  json[j] = '\0';
  assert_int_equal(zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz), 0);
  assert_int_equal(more, 0);
  return 1;
}

static void test_pub_prefix(void **state) {
  (void)state;
  char ep[512], topic[256], json[1024];
  endpoint(ep, sizeof ep, "feed.sock");
  const tw_sink_vt_t *vt = tw_sink_find("zmq-pub");
  tw_sink_t *s = NULL;
  assert_int_equal(vt->open(ep, &s), 0);
  void *ctx = zmq_ctx_new();
  void *sub = zmq_socket(ctx, ZMQ_SUB);
  assert_int_equal(zmq_connect(sub, ep), 0);
  assert_int_equal(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "44", 2), 0);

  /* Subscriptions travel asynchronously: publish a probe until one arrives. */
  const tw_rule_t probe = {.name = "probe", .severity = TW_SEV_INFO};
  int joined = 0;
  for (int i = 0; i < 250 && !joined; i++) {
    publish(s, "440000", &probe, "{\"probe\":true}");
    joined = recv_alert(sub, 20, topic, sizeof topic, json, sizeof json);
  }
  assert_true(joined);

  const tw_rule_t high = {.name = "prepaid_over_cap", .severity = TW_SEV_HIGH};
  const tw_rule_t crit = {.name = "closure_with_balance", .severity = TW_SEV_CRITICAL};
  const tw_rule_t end = {.name = "end", .severity = TW_SEV_INFO};
  publish(s, "110101", &high, "{\"region\":\"110101\"}");
  publish(s, "440106", &high, "{\"region\":\"440106\"}");
  publish(s, "310000", &crit, "{\"region\":\"310000\"}");
  publish(s, "450100", &crit, "{\"region\":\"450100\"}"); /* 45, not 44 */
  publish(s, "440300", &crit, "{\"region\":\"440300\"}");
  publish(s, "449999", &end, "{\"end\":true}");

  const char *want_topics[] = {"440106/high/prepaid_over_cap",
                               "440300/critical/closure_with_balance", "449999/info/end"};
  const char *want_json[] = {"{\"region\":\"440106\"}", "{\"region\":\"440300\"}",
                             "{\"end\":true}"};
  size_t got = 0;
  for (int i = 0; i < 500 && got < 3; i++) {
    if (!recv_alert(sub, 20, topic, sizeof topic, json, sizeof json)) continue;
    assert_memory_equal(topic, "44", 2);
    if (strcmp(topic, "440000/info/probe") == 0) continue; /* late probes */
    assert_string_equal(topic, want_topics[got]);
    assert_string_equal(json, want_json[got]);
    got++;
  }
  assert_int_equal(got, 3);
  assert_int_equal(tw_sink_zmq_pub_dropped(s), 0);

  /* An alert without a valid topic is refused, not published under a wrong prefix. */
  tw_alert_t bad;
  memset(&bad, 0, sizeof bad);
  bad.rule = &high;
  bad.region.ptr = "44/x";
  bad.region.len = 4;
  assert_int_equal(s->vt->write(s, &bad, "{}", 2), TW_EINVAL);
  assert_int_equal(s->vt->flush(s), 0);

  zmq_close(sub);
  zmq_ctx_term(ctx);
  s->vt->close(s);
  vt->close(NULL);
  assert_int_equal(tw_sink_zmq_pub_dropped(NULL), 0);
}

static void test_pub_slow_subscriber_counts_drops(void **state) {
  (void)state;
  char ep[512], topic[256], json[1024];
  endpoint(ep, sizeof ep, "slow.sock");
  tw_sink_t *s = NULL;
  assert_int_equal(tw_sink_find("zmq-pub")->open(ep, &s), 0);
  void *ctx = zmq_ctx_new();
  void *sub = zmq_socket(ctx, ZMQ_SUB);
  int hwm = 1;
  assert_int_equal(zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm), 0);
  assert_int_equal(zmq_connect(sub, ep), 0);
  assert_int_equal(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0), 0);
  const tw_rule_t rule = {.name = "prepaid_over_cap", .severity = TW_SEV_HIGH};
  int joined = 0;
  for (int i = 0; i < 250 && !joined; i++) {
    publish(s, "440106", &rule, "{}");
    joined = recv_alert(sub, 20, topic, sizeof topic, json, sizeof json);
  }
  assert_true(joined);
  /* The subscriber stops reading: past its high-water mark (100,000 queued, plus what the
   * kernel buffers), writes must neither block nor fail, and the drops are counted. */
  const int n = 300000;
  for (int i = 0; i < n; i++) publish(s, "440106", &rule, "{\"alert_id\":\"0123456789abcdef\"}");
  uint64_t dropped = tw_sink_zmq_pub_dropped(s);
  assert_true(dropped > 0);
  assert_true(dropped < (uint64_t)n);
  zmq_close(sub);
  zmq_ctx_term(ctx);
  s->vt->close(s);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pull_source),
      cmocka_unit_test(test_pull_forced_format_and_bind_error),
      cmocka_unit_test(test_push_file_to_pull),
      cmocka_unit_test(test_pub_prefix),
      cmocka_unit_test(test_pub_slow_subscriber_counts_drops),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
