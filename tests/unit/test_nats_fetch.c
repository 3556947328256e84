/*
 * test_nats_fetch.c: tw_nats_consumer_fetch against a real nats-server (JetStream, one node on a
 * free loopback port; the test is skipped when nats-server is not installed).
 *
 * The case: answers to a pull request that expired here still reach the subscription (a node
 * lost, a leader moved; tests/e2e/test_nats.sh met it after killing a node). libnats 3.4.1, as
 * Debian 12 ships it, takes such queued messages first and then reads until it holds "batch minus
 * what was queued" messages rather than "batch": with more than half a batch queued and answers
 * still coming it wrote past its array (AddressSanitizer caught the read after it in
 * tw_nats_consumer_fetch). Here 700 queued answers to a request of the test's own, a second
 * request of the test's waiting on the server, and 1,000 events published while the engine's
 * fetch of 1,000 runs: every event must come exactly once, in stream order, no fetch may hand
 * over more than it asked for, and nothing may be read or written out of bounds.
 *
 * And a delivery that never came (test_a_delivery_that_never_came, below), which the same e2e
 * test met as one complaint missing from the alerts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "nats_internal.h"
#include "tw_error.h"
#include "tw_nats.h"

#define FIRST 700  /* events there before the fetch: all of them queued as old answers */
#define LATER 1000 /* events published while the engine's fetch waits */
#define BATCH 1000 /* the engine's batch */

static char g_dir[64], g_url[64];
static pid_t g_server = -1;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static int have_nats_server(void) {
  return system("command -v nats-server >/dev/null 2>&1") == 0;
}

static int setup(void **state) {
  (void)state;
  if (!have_nats_server()) return 0;
  snprintf(g_dir, sizeof g_dir, "/tmp/tw-natsfetch-XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  int port = free_port();
  if (port < 0) return -1;
  char portstr[16], log[128];
  snprintf(portstr, sizeof portstr, "%d", port);
  snprintf(log, sizeof log, "%s/nats.log", g_dir);
  snprintf(g_url, sizeof g_url, "nats://127.0.0.1:%d", port);
  g_server = fork();
  if (g_server < 0) return -1;
  if (g_server == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* a test that aborts does not leave its server behind */
    FILE *f = freopen(log, "w", stderr);
    (void)f;
    execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", portstr, "-sd", g_dir,
           (char *)NULL);
    _exit(127);
  }
  /* Ready when it takes a JetStream connection (up to 10 s). */
  for (int i = 0; i < 100; i++) {
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char err[256];
    if (tw__nats_connect(g_url, &nc, &js, err, sizeof err) == 0) {
      jsCtx_Destroy(js);
      natsConnection_Destroy(nc);
      return 0;
    }
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static int teardown(void **state) {
  (void)state;
  if (g_server > 0) {
    kill(g_server, SIGTERM);
    waitpid(g_server, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) return -1;
  }
  nats_Close();
  return 0;
}

/* Connect to the test's server and make sure EVENTS (one partition) exists. */
static void connect_events(natsConnection **nc, jsCtx **js) {
  char err[256];
  assert_int_equal(tw__nats_connect(g_url, nc, js, err, sizeof err), 0);
  assert_int_equal(tw__nats_events_stream(*js, 1, 1, err, sizeof err), 0);
}

static void publish(jsCtx *js, int from, int n) {
  for (int i = from; i < from + n; i++) {
    char body[96];
    int len = snprintf(body, sizeof body,
                       "{\"event_id\":\"e-%d\",\"type\":\"payment\",\"institution_id\":\"I\"}", i);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(js_Publish(&pa, js, "tw.events.0", body, len, NULL, &jerr), NATS_OK);
    jsPubAck_Destroy(pa);
  }
}

/* Connect, open a consumer (owner) after the stream's last message, then publish n events
 * (ids from first on). Returns the stream sequence the consumer starts after. */
static uint64_t consumer_after_last(natsConnection **nc, jsCtx **js, const char *owner, int first,
                                    int n, tw_nats_consumer_t **c) {
  char err[256];
  connect_events(nc, js);
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  assert_int_equal(js_GetStreamInfo(&si, *js, TW_NATS_EVENTS_STREAM, NULL, &jerr), NATS_OK);
  uint64_t before = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  assert_int_equal(
      tw_nats_consumer_open(*nc, *js, 0, owner, before, TW_FORMAT_AUTO, 0, c, err, sizeof err), 0);
  publish(*js, first, n);
  return before;
}

typedef struct later {
  jsCtx *js;
} later_t;

static void *publish_later(void *arg) {
  later_t *l = arg;
  struct timespec ts = {0, 300 * 1000000L}; /* the engine's fetch is waiting by then */
  nanosleep(&ts, NULL);
  publish(l->js, FIRST, LATER);
  return NULL;
}

typedef struct seen {
  uint64_t next; /* the stream sequence expected next */
  int bad;
} seen_t;

static int on_record(void *ud, const tw_record_t *rec) {
  seen_t *s = ud;
  if (rec->line != s->next) s->bad++;
  s->next = rec->line + 1;
  return 0;
}

/* Fetch (up to max each, waiting wait_ms) and acknowledge until `want` more records came or
 * 30 s passed; every fetch must succeed and hand over at most max. Returns the records. */
static int fetch_until(tw_nats_consumer_t *c, int max, int64_t wait_ms, seen_t *s, int want) {
  int total = 0, caught_up = 0;
  for (int64_t end = now_ms() + 30000; now_ms() < end && total < want;) {
    int n = tw_nats_consumer_fetch(c, max, wait_ms, on_record, s, &caught_up);
    assert_true(n >= 0 && n <= max);
    total += n;
    if (n > 0) tw_nats_consumer_ack(c, s->next - 1);
  }
  return total;
}

static void disconnect(tw_nats_consumer_t *c, jsCtx *js, natsConnection *nc) {
  tw_nats_consumer_close(c);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

/* Ask the consumer for n messages into the engine's own subscription, as a pull request of the
 * engine's that expired here would (expires_ns 0: no expiry). */
static void pull_request_to(natsConnection *nc, const tw_nats_consumer_t *c, int n,
                            int64_t expires_ns, const char *to) {
  const char *inbox = to != NULL ? to : tw__nats_consumer_subject(c);
  assert_non_null(inbox);
  char reply[256], subject[256], body[96];
  size_t len = strlen(inbox);
  assert_true(len > 0 && len < sizeof reply - 8);
  memcpy(reply, inbox, len + 1);
  if (reply[len - 1] == '*') snprintf(reply + len - 1, sizeof reply - len + 1, "1");
  snprintf(subject, sizeof subject, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", TW_NATS_EVENTS_STREAM,
           tw_nats_consumer_name(c));
  int blen = expires_ns > 0 ? snprintf(body, sizeof body, "{\"batch\":%d,\"expires\":%lld}", n,
                                       (long long)expires_ns)
                            : snprintf(body, sizeof body, "{\"batch\":%d}", n);
  assert_int_equal(natsConnection_PublishRequest(nc, subject, reply, body, blen), NATS_OK);
  assert_int_equal(natsConnection_FlushTimeout(nc, 2000), NATS_OK);
}

static void pull_request(natsConnection *nc, const tw_nats_consumer_t *c, int n,
                         int64_t expires_ns) {
  pull_request_to(nc, c, n, expires_ns, NULL);
}

static void test_queued_answers_of_an_expired_request(void **state) {
  (void)state;
  if (g_server <= 0) skip();
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  char err[256];
  connect_events(&nc, &js);
  publish(js, 0, FIRST);

  tw_nats_consumer_t *c = NULL;
  assert_int_equal(tw_nats_consumer_open(nc, js, 0, "t", 0, TW_FORMAT_AUTO, 0, &c, err, sizeof err),
                   0);
  /* 700 answers queue up on the subscription, and a request for 500 more waits on the server. */
  pull_request(nc, c, FIRST, 0);
  int queued = 0;
  for (int i = 0; i < 200 && queued < FIRST; i++) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    queued = tw__nats_consumer_queued(c);
  }
  assert_int_equal(queued, FIRST);
  pull_request(nc, c, 500, 10LL * 1000 * 1000 * 1000);

  later_t l = {js};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, publish_later, &l), 0);
  seen_t s = {1, 0};
  int total = fetch_until(c, BATCH, 2000, &s, FIRST + LATER);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(s.bad, 0);
  assert_int_equal(total, FIRST + LATER);
  assert_int_equal(s.next, (uint64_t)(FIRST + LATER + 1));

  disconnect(c, js, nc);
}

/* The case: deliveries the server made that never reached the engine (in flight on a
 * connection to a server that went away). The consumer acknowledges everything up to the newest
 * message (AckAll), so were the next ones taken, the lost ones would never come again: the fetch
 * must see the gap in the consumer's sequence, deliver nothing after it, and a reset must start
 * after the last message delivered. Here 5 deliveries go to another inbox. */
static void test_a_delivery_that_never_came(void **state) {
  (void)state;
  if (g_server <= 0) skip();
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  tw_nats_consumer_t *c = NULL;
  char err[256];
  uint64_t before = consumer_after_last(&nc, &js, "g", 100000, 100, &c);
  seen_t s = {before + 1, 0};
  int caught_up = 0;
  assert_int_equal(tw_nats_consumer_fetch(c, 10, 2000, on_record, &s, &caught_up), 10);
  tw_nats_consumer_ack(c, s.next - 1);
  /* The server answers a pull request only while its inbox has a subscriber. */
  natsSubscription *elsewhere = NULL;
  assert_int_equal(natsConnection_SubscribeSync(&elsewhere, nc, "_INBOX.elsewhere"), NATS_OK);
  pull_request_to(nc, c, 5, 0, "_INBOX.elsewhere");
  for (int i = 0; i < 5; i++) {
    natsMsg *m = NULL;
    assert_int_equal(natsSubscription_NextMsg(&m, elsewhere, 2000), NATS_OK);
    natsMsg_Destroy(m);
  }
  natsSubscription_Destroy(elsewhere);
  /* The next delivery is the consumer's 16th: 11 to 15 went elsewhere. */
  assert_int_equal(tw_nats_consumer_fetch(c, 50, 2000, on_record, &s, &caught_up), TW_EAGAIN);
  assert_int_equal(s.next, before + 11);
  assert_int_equal(tw_nats_consumer_fetch(c, 50, 2000, on_record, &s, &caught_up), TW_EAGAIN);
  assert_true(tw_nats_consumer_broken(c)); /* its owner may make it again at once */
  assert_int_equal(tw_nats_consumer_reset(c, err, sizeof err), 0);
  assert_false(tw_nats_consumer_broken(c));
  int total = 10 + fetch_until(c, 50, 2000, &s, 90);
  assert_int_equal(s.bad, 0);
  assert_int_equal(total, 100);
  assert_int_equal(s.next, before + 101);

  disconnect(c, js, nc);
}

/* The case: a partition read to its end whose consumer then went away (its server lost: the
 * consumer keeps one copy). Fetches come back empty, and the count that said "read to its end"
 * was not asked again, so the partition stayed idle for ever: no new event read, and its
 * scheduled rules ran as if nothing were missing (tests/e2e/test_nats.sh, after a node kill).
 * Here the consumer is deleted: within a few seconds a fetch must fail (TW_EAGAIN), and after a
 * reset the events published since must come. */
static void test_a_consumer_gone_while_read_to_its_end(void **state) {
  (void)state;
  if (g_server <= 0) skip();
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  tw_nats_consumer_t *c = NULL;
  char err[256];
  jsErrCode jerr = 0;
  uint64_t before = consumer_after_last(&nc, &js, "r", 200000, 20, &c);
  seen_t s = {before + 1, 0};
  int caught_up = 0, total = 0;
  for (int i = 0; i < 50 && !(total == 20 && caught_up); i++) {
    int n = tw_nats_consumer_fetch(c, 50, 100, on_record, &s, &caught_up);
    assert_true(n >= 0);
    total += n;
  }
  assert_int_equal(total, 20);
  assert_true(caught_up);
  tw_nats_consumer_ack(c, s.next - 1);
  assert_int_equal(
      js_DeleteConsumer(js, TW_NATS_EVENTS_STREAM, tw_nats_consumer_name(c), NULL, &jerr), NATS_OK);
  publish(js, 200020, 10);
  int rc = 0;
  for (int i = 0; i < 40 && rc != TW_EAGAIN; i++) /* 100 ms each */
    rc = tw_nats_consumer_fetch(c, 50, 100, on_record, &s, &caught_up);
  assert_int_equal(rc, TW_EAGAIN);
  /* Until it is made again the partition is not read to its end: an empty fetch right after
   * the failure must not say so (its owner would take that for a working consumer). */
  rc = tw_nats_consumer_fetch(c, 50, 100, on_record, &s, &caught_up);
  assert_true(rc == 0 || rc == TW_EAGAIN);
  assert_false(caught_up);
  assert_int_equal(tw_nats_consumer_reset(c, err, sizeof err), 0);
  total += fetch_until(c, 50, 100, &s, 10);
  assert_int_equal(s.bad, 0);
  assert_int_equal(total, 30);
  assert_int_equal(s.next, before + 31);

  disconnect(c, js, nc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_queued_answers_of_an_expired_request),
      cmocka_unit_test(test_a_delivery_that_never_came),
      cmocka_unit_test(test_a_consumer_gone_while_read_to_its_end),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
