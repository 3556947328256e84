/*
 * auth.c: keys, the keys file, scopes and the ZAP handler (see tw_auth.h for the contract).
 *
 * The keys file is read with libyaml's event parser into a flat list of clients; aliases and
 * anchors are refused (a keys file needs none, and an alias bomb must cost nothing), the file
 * is at most TW_AUTH_FILE_MAX bytes and TW_AUTH_CLIENTS_MAX clients, each value at most 127
 * bytes. Every client is checked whole: a Z85 key of 40 characters, a known role, and a scope of
 * the role's shape (regulator: 2, 4 or 6 digits; institution: a credit code with a valid check
 * character), so a typo refuses the file rather than opening or closing access silently.
 *
 * The ZAP handler answers libzmq's authentication requests on inproc://zeromq.zap.01, one
 * request at a time (a lookup over at most 4096 keys): it admits a listed key whose role may use
 * the socket's domain and sets the User-Id to the client's name, so the feeds and history can
 * look the client up again from any message it sends.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>
#include <zmq.h>

#include "tw_auth.h"
#include "tw_code.h"
#include "tw_error.h"

#define AUTH_VALUE_MAX 127

const char *tw_role_name(tw_role_t role) {
  switch (role) {
    case TW_ROLE_REGULATOR:
      return "regulator";
    case TW_ROLE_INSTITUTION:
      return "institution";
    case TW_ROLE_OPERATOR:
      return "operator";
  }
  return "?";
}

const char *tw_view_name(tw_view_t view) {
  switch (view) {
    case TW_VIEW_FEED:
      return "feed";
    case TW_VIEW_SELF_CHECK:
      return "self-check";
    case TW_VIEW_HISTORY:
      return "history";
    case TW_VIEW_CONTROL:
      return "control";
    case TW_VIEW_INGEST:
      return "ingest";
  }
  return "?";
}

bool tw_auth_role_admitted(tw_role_t role, tw_view_t view) {
  if (role == TW_ROLE_OPERATOR) return true;
  switch (view) {
    case TW_VIEW_FEED:
    case TW_VIEW_CONTROL:
      return role == TW_ROLE_REGULATOR;
    case TW_VIEW_SELF_CHECK:
      return role == TW_ROLE_INSTITUTION;
    case TW_VIEW_HISTORY:
      return true;
    case TW_VIEW_INGEST:
      return false;
  }
  return false;
}

bool tw_auth_scope_allows(const tw_client_t *c, tw_view_t view, const char *prefix, size_t len) {
  if (c == NULL || (prefix == NULL && len > 0)) return false;
  if (c->role == TW_ROLE_OPERATOR) return true;
  size_t sl = strlen(c->scope);
  if (sl == 0) return false;
  if (c->role == TW_ROLE_REGULATOR)
    return (view == TW_VIEW_FEED || view == TW_VIEW_HISTORY || view == TW_VIEW_CONTROL) &&
           len >= sl && memcmp(prefix, c->scope, sl) == 0;
  if (c->role == TW_ROLE_INSTITUTION)
    return (view == TW_VIEW_SELF_CHECK || view == TW_VIEW_HISTORY) && len == sl &&
           memcmp(prefix, c->scope, sl) == 0;
  return false;
}

int tw_auth_endpoint_is_local(const char *ep) {
  if (ep == NULL) return 0;
  if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0) return 1;
  if (strncmp(ep, "tcp://", 6) != 0) return 0;
  const char *h = ep + 6;
  if (strncmp(h, "localhost:", 10) == 0 || strncmp(h, "[::1]:", 6) == 0) return 1;
  if (strncmp(h, "127.", 4) != 0) return 0;
  /* 127.a.b.c:port with digits only: "127.0.0.1.evil.example:1" is not loopback. */
  int dots = 0;
  for (h += 4; *h != ':'; h++) {
    if (*h == '.')
      dots++;
    else if (*h < '0' || *h > '9')
      return 0;
  }
  return dots == 2;
}

/* ---- key files ------------------------------------------------------------------------------ */

/* Read a small file that must hold exactly one Z85 key and optional trailing whitespace. */
static int read_z85(const char *path, char *z85) {
  char buf[256];
  FILE *f = fopen(path, "r");
  if (f == NULL) return TW_EIO;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  int err = ferror(f);
  fclose(f);
  if (err) return TW_EIO;
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
  if (n != TW_AUTH_Z85_LEN) return TW_EINVAL;
  unsigned char raw[32];
  if (zmq_z85_decode(raw, buf) == NULL) return TW_EINVAL;
  memcpy(z85, buf, TW_AUTH_Z85_LEN + 1);
  return 0;
}

int tw_auth_read_secret(const char *path, char *secret_z85, char *public_z85) {
  int rc = read_z85(path, secret_z85);
  if (rc != 0) return rc;
  if (zmq_curve_public(public_z85, secret_z85) != 0) return TW_EINVAL;
  return 0;
}

int tw_auth_read_public(const char *path, char *public_z85) {
  return read_z85(path, public_z85);
}

static int write_new(const char *path, const char *line, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return errno == EEXIST ? TW_EEXIST : TW_EIO;
  size_t len = strlen(line);
  int ok = write(fd, line, len) == (ssize_t)len && fsync(fd) == 0;
  int e = errno;
  close(fd);
  if (!ok) {
    unlink(path);
    errno = e;
    return TW_EIO;
  }
  return 0;
}

int tw_auth_keygen(const char *prefix) {
  char pub[TW_AUTH_Z85_LEN + 1], sec[TW_AUTH_Z85_LEN + 1];
  char key_path[4096], pub_path[4096], line[64];
  if (prefix == NULL || prefix[0] == '\0') return TW_EINVAL;
  if (snprintf(key_path, sizeof key_path, "%s.key", prefix) >= (int)sizeof key_path ||
      snprintf(pub_path, sizeof pub_path, "%s.pub", prefix) >= (int)sizeof pub_path)
    return TW_EINVAL;
  if (!zmq_has("curve")) return TW_ECRYPTO;
  if (access(key_path, F_OK) == 0 || access(pub_path, F_OK) == 0) return TW_EEXIST;
  if (zmq_curve_keypair(pub, sec) != 0) return TW_ECRYPTO;
  snprintf(line, sizeof line, "%s\n", sec);
  int rc = write_new(key_path, line, 0600);
  memset(sec, 0, sizeof sec);
  memset(line, 0, sizeof line);
  if (rc != 0) return rc;
  snprintf(line, sizeof line, "%s\n", pub);
  rc = write_new(pub_path, line, 0644);
  if (rc != 0) unlink(key_path);
  return rc;
}

/* ---- keys file ------------------------------------------------------------------------------ */

typedef struct kparse {
  tw_auth_t *auth;
  const char *path;
  char *err;
  size_t errcap;
  size_t cap;
} kparse_t;

static int kerr(kparse_t *k, size_t line, int rc, const char *fmt, const char *arg) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, arg);
  snprintf(k->err, k->errcap, "%s:%zu: %s", k->path, line, msg);
  return rc;
}

typedef struct kclient {
  char name[AUTH_VALUE_MAX + 1], key[AUTH_VALUE_MAX + 1], role[AUTH_VALUE_MAX + 1],
      scope[AUTH_VALUE_MAX + 1];
  int have_name, have_key, have_role, have_scope;
  size_t line;
} kclient_t;

static int region_prefix_ok(const char *s) {
  size_t n = strlen(s);
  if (n != 2 && n != 4 && n != 6) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

static int add_client(kparse_t *k, const kclient_t *kc) {
  tw_auth_t *a = k->auth;
  tw_client_t c;
  memset(&c, 0, sizeof c);
  if (!kc->have_name || kc->name[0] == '\0')
    return kerr(k, kc->line, TW_EINVAL, "a client needs a name%s", "");
  if (strlen(kc->name) > TW_AUTH_NAME_MAX)
    return kerr(k, kc->line, TW_ETOOBIG, "client name '%s' is longer than 64 bytes", kc->name);
  for (const char *p = kc->name; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
      return kerr(k, kc->line, TW_EINVAL, "client name '%s' has a control character or quote",
                  kc->name);
  memcpy(c.name, kc->name, strlen(kc->name) + 1);
  if (!kc->have_key)
    return kerr(k, kc->line, TW_EINVAL, "client '%s' needs a public_key", kc->name);
  if (strlen(kc->key) != TW_AUTH_Z85_LEN || zmq_z85_decode(c.public_key, kc->key) == NULL)
    return kerr(k, kc->line, TW_EINVAL,
                "client '%s': public_key is not a 40-character Z85 key (the line of NAME.pub)",
                kc->name);
  if (!kc->have_role) return kerr(k, kc->line, TW_EINVAL, "client '%s' needs a role", kc->name);
  if (strcmp(kc->role, "regulator") == 0) {
    c.role = TW_ROLE_REGULATOR;
    if (!kc->have_scope || !region_prefix_ok(kc->scope))
      return kerr(k, kc->line, TW_EINVAL,
                  "regulator '%s' needs a scope of 2, 4 or 6 digits (a region prefix such as "
                  "\"4401\")",
                  kc->name);
  } else if (strcmp(kc->role, "institution") == 0) {
    c.role = TW_ROLE_INSTITUTION;
    if (!kc->have_scope || !tw_credit_code_valid(kc->scope, strlen(kc->scope)))
      return kerr(k, kc->line, TW_EINVAL,
                  "institution '%s' needs a scope that is its 18-character credit code with a "
                  "valid check character",
                  kc->name);
  } else if (strcmp(kc->role, "operator") == 0) {
    c.role = TW_ROLE_OPERATOR;
    if (kc->have_scope && kc->scope[0] != '\0')
      return kerr(k, kc->line, TW_EINVAL, "operator '%s' takes no scope (it may read everything)",
                  kc->name);
  } else {
    return kerr(k, kc->line, TW_EINVAL, "unknown role '%s' (regulator, institution or operator)",
                kc->role);
  }
  if (c.role != TW_ROLE_OPERATOR) memcpy(c.scope, kc->scope, strlen(kc->scope) + 1);
  if (tw_auth_find_name(a, c.name) != NULL)
    return kerr(k, kc->line, TW_EEXIST, "client name '%s' appears twice", c.name);
  if (tw_auth_find_key(a, c.public_key) != NULL)
    return kerr(k, kc->line, TW_EEXIST, "client '%s' has a public key listed before", c.name);
  if (a->n_clients == TW_AUTH_CLIENTS_MAX)
    return kerr(k, kc->line, TW_ETOOBIG, "more than %s clients", "4096");
  if (a->n_clients == k->cap) {
    size_t ncap = k->cap ? k->cap * 2 : 16;
    tw_client_t *n = realloc(a->clients, ncap * sizeof *n);
    if (n == NULL) return kerr(k, kc->line, TW_ENOMEM, "out of memory%s", "");
    a->clients = n;
    k->cap = ncap;
  }
  a->clients[a->n_clients++] = c;
  return 0;
}

/* States of the event walk: root map → "clients" → sequence → client map → key → value. */
static int parse_keys(kparse_t *k, const unsigned char *data, size_t len) {
  yaml_parser_t p;
  yaml_event_t ev;
  int rc = 0, depth = 0, in_clients = 0, expect_value = 0, done = 0;
  char cur_key[AUTH_VALUE_MAX + 1] = "";
  kclient_t kc;
  int in_client = 0, saw_clients = 0;
  if (!yaml_parser_initialize(&p)) return kerr(k, 0, TW_ENOMEM, "out of memory%s", "");
  yaml_parser_set_input_string(&p, data, len);
  while (!done && rc == 0) {
    if (!yaml_parser_parse(&p, &ev)) {
      rc = kerr(k, p.problem_mark.line + 1, TW_EPARSE, "%s",
                p.problem ? p.problem : "YAML syntax error");
      break;
    }
    size_t line = ev.start_mark.line + 1;
    switch (ev.type) {
      case YAML_STREAM_END_EVENT:
        done = 1;
        break;
      case YAML_ALIAS_EVENT:
        rc = kerr(k, line, TW_EINVAL, "aliases are not allowed in a keys file%s", "");
        break;
      case YAML_MAPPING_START_EVENT:
        if (ev.data.mapping_start.anchor != NULL) {
          rc = kerr(k, line, TW_EINVAL, "anchors are not allowed in a keys file%s", "");
        } else if (depth == 0) {
          depth = 1;
        } else if (in_clients && depth == 2 && !in_client) {
          memset(&kc, 0, sizeof kc);
          kc.line = line;
          in_client = 1;
          depth = 3;
          expect_value = 0;
        } else {
          rc = kerr(k, line, TW_EINVAL, "unexpected mapping (a client's fields are scalars)%s", "");
        }
        break;
      case YAML_MAPPING_END_EVENT:
        if (depth == 3) {
          rc = add_client(k, &kc);
          in_client = 0;
          depth = 2;
        } else if (depth == 1) {
          depth = 0;
        }
        expect_value = 0;
        break;
      case YAML_SEQUENCE_START_EVENT:
        if (depth == 1 && expect_value && strcmp(cur_key, "clients") == 0 && !saw_clients) {
          in_clients = 1;
          saw_clients = 1;
          depth = 2;
          expect_value = 0;
        } else {
          rc = kerr(k, line, TW_EINVAL, "unexpected list (only 'clients' is a list)%s", "");
        }
        break;
      case YAML_SEQUENCE_END_EVENT:
        in_clients = 0;
        depth = 1;
        break;
      case YAML_SCALAR_EVENT: {
        const char *v = (const char *)ev.data.scalar.value;
        size_t vl = ev.data.scalar.length;
        if (ev.data.scalar.anchor != NULL) {
          rc = kerr(k, line, TW_EINVAL, "anchors are not allowed in a keys file%s", "");
          break;
        }
        if (vl > AUTH_VALUE_MAX || memchr(v, '\0', vl) != NULL) {
          rc = kerr(k, line, TW_ETOOBIG, "value longer than 127 bytes%s", "");
          break;
        }
        if (depth == 1) {
          if (!expect_value) {
            if (strcmp(v, "clients") != 0) {
              rc = kerr(k, line, TW_EINVAL, "unknown top-level key '%s' (expected 'clients')", v);
              break;
            }
            memcpy(cur_key, v, vl + 1);
            expect_value = 1;
          } else {
            /* "clients:" with no list (empty): no client admitted */
            if (vl != 0) rc = kerr(k, line, TW_EINVAL, "'clients' must be a list%s", "");
            saw_clients = 1;
            expect_value = 0;
          }
        } else if (depth == 3) {
          if (!expect_value) {
            memcpy(cur_key, v, vl + 1);
            expect_value = 1;
          } else {
            char *dst = NULL;
            int *have = NULL;
            if (strcmp(cur_key, "name") == 0) {
              dst = kc.name, have = &kc.have_name;
            } else if (strcmp(cur_key, "public_key") == 0) {
              dst = kc.key, have = &kc.have_key;
            } else if (strcmp(cur_key, "role") == 0) {
              dst = kc.role, have = &kc.have_role;
            } else if (strcmp(cur_key, "scope") == 0) {
              dst = kc.scope, have = &kc.have_scope;
            } else {
              rc = kerr(k, line, TW_EINVAL,
                        "unknown client field '%s' (name, public_key, role, scope)", cur_key);
              break;
            }
            if (*have) {
              rc = kerr(k, line, TW_EINVAL, "field '%s' given twice", cur_key);
              break;
            }
            memcpy(dst, v, vl + 1);
            *have = 1;
            expect_value = 0;
          }
        } else if (depth == 0 && vl == 0) {
          /* an empty document */
        } else {
          rc = kerr(k, line, TW_EINVAL, "unexpected value '%s'", v);
        }
        break;
      }
      default:
        break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  if (rc == 0 && !saw_clients)
    rc = kerr(k, 1, TW_EINVAL, "no 'clients:' list (see docs/feeds.md)%s", "");
  return rc;
}

int tw_auth_load(const char *keys_path, const char *server_key_path, tw_auth_t **out, char *errbuf,
                 size_t errcap) {
  kparse_t k;
  unsigned char *data = NULL;
  FILE *f = NULL;
  int rc = TW_ENOMEM;
  memset(&k, 0, sizeof k);
  k.path = keys_path;
  k.err = errbuf;
  k.errcap = errcap;
  k.auth = calloc(1, sizeof *k.auth);
  if (k.auth == NULL) goto fail;
  rc = tw_auth_read_secret(server_key_path, k.auth->server_secret_z85, k.auth->server_public_z85);
  if (rc != 0) {
    snprintf(errbuf, errcap, "%s: %s", server_key_path,
             rc == TW_EIO ? strerror(errno)
                          : "not a secret key file (40 Z85 characters, as `keys gen` writes)");
    goto fail;
  }
  f = fopen(keys_path, "rb");
  if (f == NULL) {
    snprintf(errbuf, errcap, "%s: %s", keys_path, strerror(errno));
    rc = TW_EIO;
    goto fail;
  }
  data = malloc(TW_AUTH_FILE_MAX + 1);
  rc = TW_ENOMEM;
  if (data == NULL) goto fail;
  size_t n = fread(data, 1, TW_AUTH_FILE_MAX + 1, f);
  if (ferror(f)) {
    snprintf(errbuf, errcap, "%s: %s", keys_path, strerror(errno));
    rc = TW_EIO;
    goto fail;
  }
  if (n > TW_AUTH_FILE_MAX) {
    snprintf(errbuf, errcap, "%s: larger than 1 MiB", keys_path);
    rc = TW_ETOOBIG;
    goto fail;
  }
  rc = parse_keys(&k, data, n);
  if (rc != 0) goto fail;
  *out = k.auth;
  k.auth = NULL;
fail:
  if (f != NULL) fclose(f);
  free(data);
  tw_auth_free(k.auth);
  return rc;
}

void tw_auth_free(tw_auth_t *auth) {
  if (auth == NULL) return;
  free(auth->clients);
  memset(auth, 0, sizeof *auth);
  free(auth);
}

const tw_client_t *tw_auth_find_key(const tw_auth_t *a, const unsigned char *key32) {
  if (a == NULL || key32 == NULL) return NULL;
  for (size_t i = 0; i < a->n_clients; i++)
    if (memcmp(a->clients[i].public_key, key32, 32) == 0) return &a->clients[i];
  return NULL;
}

const tw_client_t *tw_auth_find_name(const tw_auth_t *a, const char *name) {
  if (a == NULL || name == NULL) return NULL;
  for (size_t i = 0; i < a->n_clients; i++)
    if (strcmp(a->clients[i].name, name) == 0) return &a->clients[i];
  return NULL;
}

int tw_auth_server_socket(const tw_auth_t *auth, void *sock, tw_view_t view) {
  int one = 1;
  const char *domain = tw_view_name(view);
  if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
      zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, auth->server_secret_z85, TW_AUTH_Z85_LEN) != 0 ||
      zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0)
    return TW_EZMQ;
  return 0;
}

int tw_auth_client_socket(void *sock, const char *secret_z85, const char *public_z85,
                          const char *server_z85) {
  if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_z85, TW_AUTH_Z85_LEN) != 0 ||
      zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public_z85, TW_AUTH_Z85_LEN) != 0 ||
      zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret_z85, TW_AUTH_Z85_LEN) != 0)
    return TW_EZMQ;
  return 0;
}

/* ---- ZAP handler ---------------------------------------------------------------------------- */

#define ZAP_FRAMES_MAX 8
#define ZAP_FRAME_MAX 256

struct tw_auth_zap {
  const tw_auth_t *auth;
  void *sock;
  pthread_t thread;
  char log_prefix[64];
};

static int zap_send(void *sock, const void *data, size_t len, int more) {
  return zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0 ? -1 : 0;
}

static void *zap_main(void *arg) {
  tw_auth_zap_t *z = arg;
  for (;;) {
    char frames[ZAP_FRAMES_MAX][ZAP_FRAME_MAX];
    size_t lens[ZAP_FRAMES_MAX];
    int n = 0, more = 1, term = 0;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, z->sock, 0) < 0) {
        zmq_msg_close(&m);
        if (zmq_errno() == EINTR) continue;
        term = 1;
        break;
      }
      more = zmq_msg_more(&m);
      if (n < ZAP_FRAMES_MAX) {
        size_t l = zmq_msg_size(&m);
        lens[n] = l < ZAP_FRAME_MAX - 1 ? l : ZAP_FRAME_MAX - 1;
        memcpy(frames[n], zmq_msg_data(&m), lens[n]);
        frames[n][lens[n]] = '\0';
        n++;
      }
      zmq_msg_close(&m);
    }
    if (term) break;
    if (n < 6) continue; /* not a ZAP request; REP needs no reply to a malformed one */
    /* frames: version, request id, domain, address, routing id, mechanism, credentials... */
    const char *status = "400", *text = "refused";
    const tw_client_t *c = NULL;
    tw_view_t view = TW_VIEW_FEED;
    int known_view = 0;
    for (int v = TW_VIEW_FEED; v <= TW_VIEW_INGEST; v++)
      if (strcmp(frames[2], tw_view_name((tw_view_t)v)) == 0) view = (tw_view_t)v, known_view = 1;
    if (strcmp(frames[5], "CURVE") == 0 && n >= 7 && lens[6] == 32)
      c = tw_auth_find_key(z->auth, (const unsigned char *)frames[6]);
    if (c == NULL) {
      char z85[TW_AUTH_Z85_LEN + 1] = "?";
      if (n >= 7 && lens[6] == 32) zmq_z85_encode(z85, (const uint8_t *)frames[6], 32);
      fprintf(stderr, "%s: refused a connection from %s to %s: unknown key %s\n", z->log_prefix,
              frames[3], frames[2], z85);
      text = "unknown key";
    } else if (!known_view || !tw_auth_role_admitted(c->role, view)) {
      fprintf(stderr, "%s: refused '%s' (%s) on the %s endpoint: its role may not use it\n",
              z->log_prefix, c->name, tw_role_name(c->role), frames[2]);
      text = "role not admitted";
    } else {
      status = "200";
      text = "OK";
    }
    const char *user = status[0] == '2' ? c->name : "";
    if (zap_send(z->sock, "1.0", 3, 1) != 0 || zap_send(z->sock, frames[1], lens[1], 1) != 0 ||
        zap_send(z->sock, status, 3, 1) != 0 || zap_send(z->sock, text, strlen(text), 1) != 0 ||
        zap_send(z->sock, user, strlen(user), 1) != 0 || zap_send(z->sock, "", 0, 0) != 0) {
      if (zmq_errno() == ETERM) break;
    }
  }
  int linger = 0;
  zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_close(z->sock);
  return NULL;
}

int tw_auth_zap_start(const tw_auth_t *auth, void *ctx, const char *log_prefix,
                      tw_auth_zap_t **out) {
  tw_auth_zap_t *z = calloc(1, sizeof *z);
  if (z == NULL) return TW_ENOMEM;
  z->auth = auth;
  snprintf(z->log_prefix, sizeof z->log_prefix, "%s", log_prefix ? log_prefix : "tutorwatch");
  z->sock = zmq_socket(ctx, ZMQ_REP);
  if (z->sock == NULL || zmq_bind(z->sock, "inproc://zeromq.zap.01") != 0) goto fail;
  if (pthread_create(&z->thread, NULL, zap_main, z) != 0) goto fail;
  *out = z;
  return 0;
fail:
  if (z->sock != NULL) zmq_close(z->sock);
  free(z);
  return TW_EZMQ;
}

void tw_auth_zap_join(tw_auth_zap_t *z) {
  if (z == NULL) return;
  pthread_join(z->thread, NULL);
  free(z);
}

int tw_auth_recv_request(void *router, zmq_msg_t parts[3], size_t max_bytes) {
  int n = 0, more = 1;
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, router, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      break;
    }
    more = zmq_msg_more(&m);
    if (n < 3)
      parts[n++] = m;
    else
      zmq_msg_close(&m), n = 4; /* too many parts: dropped whole */
  }
  if (n != 3 || zmq_msg_size(&parts[1]) != 0 ||
      (max_bytes > 0 && zmq_msg_size(&parts[2]) > max_bytes)) {
    for (int i = 0; i < n && i < 3; i++) zmq_msg_close(&parts[i]);
    return 0;
  }
  return 1;
}
