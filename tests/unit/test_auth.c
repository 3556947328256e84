/*
 * test_auth.c: scopes as a table (role, view, prefix → allowed), the endpoints counted as
 * loopback, key files (gen, read back, refuse overwrite, mode 0600) and the keys file: a valid
 * one, and a table of invalid ones with their exact located messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tw_auth.h"
#include "tw_error.h"

#define CODE_A "52440111DWK00007H2" /* a credit code with a valid check character */

static tw_client_t client(tw_role_t role, const char *scope) {
  tw_client_t c;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "c");
  c.role = role;
  snprintf(c.scope, sizeof c.scope, "%s", scope);
  return c;
}

typedef struct scope_case {
  tw_role_t role;
  const char *scope;
  tw_view_t view;
  const char *prefix;
  bool allowed;
} scope_case_t;

static void test_scopes(void **state) {
  (void)state;
  static const scope_case_t cases[] = {
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "4401", true},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "440106", true},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "440106/high/", true},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "44", false},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "", false},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "4402", false},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_FEED, "440", false},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_HISTORY, "4401", true},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_HISTORY, "44", false},
      {TW_ROLE_REGULATOR, "4401", TW_VIEW_SELF_CHECK, "4401", false},
      {TW_ROLE_REGULATOR, "44", TW_VIEW_FEED, "44", true},
      {TW_ROLE_REGULATOR, "44", TW_VIEW_FEED, "4", false},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_SELF_CHECK, CODE_A, true},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_SELF_CHECK, "52440111", false},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_SELF_CHECK, "", false},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_SELF_CHECK, CODE_A "X", false},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_SELF_CHECK, "52440111DWK00007H3", false},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_FEED, CODE_A, false},
      {TW_ROLE_INSTITUTION, CODE_A, TW_VIEW_HISTORY, CODE_A, true},
      {TW_ROLE_OPERATOR, "", TW_VIEW_FEED, "", true},
      {TW_ROLE_OPERATOR, "", TW_VIEW_SELF_CHECK, "", true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tw_client_t c = client(cases[i].role, cases[i].scope);
    bool got = tw_auth_scope_allows(&c, cases[i].view, cases[i].prefix, strlen(cases[i].prefix));
    if (got != cases[i].allowed)
      fail_msg("case %zu: %s %s on %s prefix '%s': got %d", i, tw_role_name(cases[i].role),
               cases[i].scope, tw_view_name(cases[i].view), cases[i].prefix, got);
  }
  assert_false(tw_auth_scope_allows(NULL, TW_VIEW_FEED, "44", 2));
  tw_client_t none = client(TW_ROLE_REGULATOR, "");
  assert_false(tw_auth_scope_allows(&none, TW_VIEW_FEED, "", 0)); /* no scope: nothing */
}

static void test_roles_admitted(void **state) {
  (void)state;
  assert_true(tw_auth_role_admitted(TW_ROLE_REGULATOR, TW_VIEW_FEED));
  assert_false(tw_auth_role_admitted(TW_ROLE_REGULATOR, TW_VIEW_INGEST));
  assert_false(tw_auth_role_admitted(TW_ROLE_REGULATOR, TW_VIEW_SELF_CHECK));
  assert_false(tw_auth_role_admitted(TW_ROLE_INSTITUTION, TW_VIEW_FEED));
  assert_true(tw_auth_role_admitted(TW_ROLE_INSTITUTION, TW_VIEW_SELF_CHECK));
  assert_false(tw_auth_role_admitted(TW_ROLE_INSTITUTION, TW_VIEW_CONTROL));
  assert_true(tw_auth_role_admitted(TW_ROLE_OPERATOR, TW_VIEW_INGEST));
}

static void test_local_endpoints(void **state) {
  (void)state;
  assert_true(tw_auth_endpoint_is_local("tcp://127.0.0.1:7600"));
  assert_true(tw_auth_endpoint_is_local("tcp://127.1.2.3:7600"));
  assert_true(tw_auth_endpoint_is_local("tcp://localhost:7600"));
  assert_true(tw_auth_endpoint_is_local("tcp://[::1]:7600"));
  assert_true(tw_auth_endpoint_is_local("ipc:///run/tw.sock"));
  assert_false(tw_auth_endpoint_is_local("tcp://0.0.0.0:7600"));
  assert_false(tw_auth_endpoint_is_local("tcp://*:7600"));
  assert_false(tw_auth_endpoint_is_local("tcp://10.0.0.1:7600"));
  assert_false(tw_auth_endpoint_is_local("tcp://127.0.0.1.evil.example:7600"));
  assert_false(tw_auth_endpoint_is_local("tcp://eth0;127.0.0.1:7600"));
  assert_false(tw_auth_endpoint_is_local("tcp://127.0.0.1"));
  assert_false(tw_auth_endpoint_is_local(NULL));
}

static char g_dir[] = "/tmp/tw_test_auth_XXXXXX";

static void path_in(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", g_dir, name);
}

static void test_keygen(void **state) {
  (void)state;
  char prefix[256], key[300], pub[300], sec[41], p1[41], p2[41];
  path_in(prefix, sizeof prefix, "k1");
  snprintf(key, sizeof key, "%s.key", prefix);
  snprintf(pub, sizeof pub, "%s.pub", prefix);
  assert_int_equal(tw_auth_keygen(prefix), 0);
  struct stat st;
  assert_int_equal(stat(key, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(tw_auth_read_secret(key, sec, p1), 0);
  assert_int_equal(tw_auth_read_public(pub, p2), 0);
  assert_string_equal(p1, p2); /* the .pub is the public half of the .key */
  assert_int_equal(tw_auth_keygen(prefix), TW_EEXIST);
  char missing[320];
  snprintf(missing, sizeof missing, "%s.missing", prefix);
  assert_int_equal(tw_auth_read_public(missing, p2), TW_EIO);
  FILE *f = fopen(pub, "w");
  fputs("not a key\n", f);
  fclose(f);
  assert_int_equal(tw_auth_read_public(pub, p2), TW_EINVAL);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void test_keys_file(void **state) {
  (void)state;
  char prefix[256], key[300], pubpath[300], keys[300], pub[41], text[2048], err[512];
  path_in(prefix, sizeof prefix, "srv");
  assert_int_equal(tw_auth_keygen(prefix), 0);
  snprintf(key, sizeof key, "%s.key", prefix);
  snprintf(pubpath, sizeof pubpath, "%s.pub", prefix);
  assert_int_equal(tw_auth_read_public(pubpath, pub), 0);
  path_in(keys, sizeof keys, "keys.yaml");
  snprintf(text, sizeof text,
           "clients:\n"
           "  - {name: gz, public_key: \"%s\", role: regulator, scope: \"4401\"}\n"
           "  - name: inst\n    public_key: \"%s\"\n    role: institution\n    scope: %s\n",
           pub, "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", CODE_A);
  write_text(keys, text);
  tw_auth_t *a = NULL;
  assert_int_equal(tw_auth_load(keys, key, &a, err, sizeof err), 0);
  assert_int_equal(a->n_clients, 2);
  const tw_client_t *gz = tw_auth_find_name(a, "gz");
  assert_non_null(gz);
  assert_int_equal(gz->role, TW_ROLE_REGULATOR);
  assert_string_equal(gz->scope, "4401");
  assert_ptr_equal(tw_auth_find_key(a, gz->public_key), gz);
  assert_string_equal(tw_auth_find_name(a, "inst")->scope, CODE_A);
  assert_null(tw_auth_find_name(a, "nobody"));
  tw_auth_free(a);

  static const struct {
    const char *body, *message;
  } bad[] = {
      {"clients:\n  - {name: x, public_key: \"%s\", role: regulator, scope: \"4\"}\n",
       ":2: regulator 'x' needs a scope of 2, 4 or 6 digits"},
      {"clients:\n  - {name: x, public_key: \"%s\", role: institution, scope: "
       "\"52440111DWK00007H3\"}\n",
       ":2: institution 'x' needs a scope that is its 18-character credit code"},
      {"clients:\n  - {name: x, public_key: \"%s\", role: admin}\n", ":2: unknown role 'admin'"},
      {"clients:\n  - {name: x, public_key: \"short\", role: operator}\n",
       ":2: client 'x': public_key is not a 40-character Z85 key"},
      {"clients:\n  - {name: x, public_key: \"%s\", role: operator}\n"
       "  - {name: x, public_key: \"%s\", role: operator}\n",
       ":3: client name 'x' appears twice"},
      {"clients:\n  - &a {name: x, public_key: \"%s\", role: operator}\n  - *a\n",
       ":2: anchors are not allowed"},
      {"clients:\n  - {name: x, public_key: \"%s\", role: operator, extra: 1}\n",
       ":2: unknown client field 'extra'"},
      {"users: []\n", ":1: unknown top-level key 'users'"},
      {"clients: [\n", ":2: did not find expected node content"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(text, sizeof text, bad[i].body, pub, pub);
    write_text(keys, text);
    a = NULL;
    err[0] = '\0';
    int rc = tw_auth_load(keys, key, &a, err, sizeof err);
    if (rc == 0 || a != NULL || strstr(err, bad[i].message) == NULL)
      fail_msg("bad keys file %zu: rc %d, message '%s', expected '%s'", i, rc, err, bad[i].message);
  }
  assert_int_not_equal(tw_auth_load(keys, "/nonexistent.key", &a, err, sizeof err), 0);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scopes),          cmocka_unit_test(test_roles_admitted),
      cmocka_unit_test(test_local_endpoints), cmocka_unit_test(test_keygen),
      cmocka_unit_test(test_keys_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
