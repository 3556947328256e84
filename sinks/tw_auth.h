/*
 * tw_auth.h: who may connect to the engine's ZeroMQ endpoints and what each may read.
 *
 * With a keys file (`run --keys FILE`), every endpoint is a CURVE server (the engine's key pair
 * from `--server-key FILE.key`) and a ZAP handler admits only the public keys the file lists;
 * each key carries a role and a scope:
 *
 *   regulator   + a region prefix of 2, 4 or 6 digits ("44" province, "4401" city, "440106"
 *                 county): may subscribe to, and ask history for, prefixes inside that region
 *   institution + one 18-character credit code: its own self-check feed only
 *   operator    : everything, including the ingest and control endpoints
 *
 * The keys file is YAML:
 *
 *   clients:
 *     - {name: gz-bureau, public_key: "<40 Z85 characters>", role: regulator, scope: "4401"}
 *     - {name: inst-a, public_key: "...", role: institution, scope: "91440101MA59XXXX1X"}
 *     - {name: ops, public_key: "...", role: operator}
 *
 * Key files made by `tutorwatch keys gen NAME`: NAME.key holds the Z85 secret key on one line
 * (mode 0600), NAME.pub the Z85 public key on one line.
 *
 * Without a keys file nothing is authenticated; the engine then binds to loopback only
 * (tw_auth_endpoint_is_local).
 *
 * Thread rules: a loaded tw_auth_t is immutable and may be read from any thread.
 */
#ifndef TW_AUTH_H
#define TW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <zmq.h>

#define TW_AUTH_Z85_LEN 40         /* a CURVE key in Z85 */
#define TW_AUTH_NAME_MAX 64        /* bytes of a client name */
#define TW_AUTH_CLIENTS_MAX 4096   /* clients in one keys file */
#define TW_AUTH_FILE_MAX (1 << 20) /* bytes of a keys file */

typedef enum tw_role { TW_ROLE_REGULATOR = 0, TW_ROLE_INSTITUTION, TW_ROLE_OPERATOR } tw_role_t;

/* Which endpoint a request comes through; each admits some roles (tw_auth_role_admitted). */
typedef enum tw_view {
  TW_VIEW_FEED = 0,   /* regulator feed (XPUB): topics "<region>/<severity>/<rule>" */
  TW_VIEW_SELF_CHECK, /* institution self-check feed (XPUB): topic = credit code */
  TW_VIEW_HISTORY,    /* history (ROUTER) */
  TW_VIEW_CONTROL,    /* alert lifecycle commands (ROUTER) */
  TW_VIEW_INGEST      /* events in (PULL / ROUTER) */
} tw_view_t;

typedef struct tw_client {
  char name[TW_AUTH_NAME_MAX + 1];
  unsigned char public_key[32];
  tw_role_t role;
  char scope[24]; /* region prefix or credit code; "" for an operator */
} tw_client_t;

struct tw_auth {
  tw_client_t *clients;
  size_t n_clients;
  char server_secret_z85[TW_AUTH_Z85_LEN + 1];
  char server_public_z85[TW_AUTH_Z85_LEN + 1];
};
typedef struct tw_auth tw_auth_t;

/*
 * tw_auth_keygen: make a CURVE key pair and write path_prefix.key (the Z85 secret key and a
 * newline, created with mode 0600, never overwriting) and path_prefix.pub (the Z85 public key and
 * a newline). Returns 0; TW_EEXIST when either file exists; TW_EIO (errno says why);
 * TW_ECRYPTO when libzmq has no CURVE support.
 */
int tw_auth_keygen(const char *path_prefix);

/*
 * tw_auth_read_secret: read a .key file: secret_z85 and the matching public_z85 (each 41 bytes,
 * NUL-terminated). Returns 0; TW_EIO (unreadable; errno); TW_EINVAL (not a Z85 key: the file
 * must hold exactly 40 Z85 characters, then optional whitespace).
 */
int tw_auth_read_secret(const char *path, char *secret_z85, char *public_z85);

/* tw_auth_read_public: read a .pub file into public_z85 (41 bytes). Errors as read_secret. */
int tw_auth_read_public(const char *path, char *public_z85);

/*
 * tw_auth_load: read the keys file and the server's secret key. On failure returns TW_EIO,
 * TW_EINVAL, TW_EPARSE, TW_ETOOBIG (file or client count over the bounds), TW_EEXIST (a
 * duplicated name or key) or TW_ENOMEM, with "file:line: message" in errbuf. On success *out is
 * owned by the caller (tw_auth_free).
 */
int tw_auth_load(const char *keys_path, const char *server_key_path, tw_auth_t **out, char *errbuf,
                 size_t errcap);

void tw_auth_free(tw_auth_t *auth); /* NULL accepted */

/* tw_auth_find_key / tw_auth_find_name: the client with that 32-byte public key or that name,
 * or NULL. Linear in the number of clients; called once per connection or message. */
const tw_client_t *tw_auth_find_key(const tw_auth_t *auth, const unsigned char *key32);
const tw_client_t *tw_auth_find_name(const tw_auth_t *auth, const char *name);

/* tw_auth_role_admitted: whether a role may connect to an endpoint of that view at all:
 * feed: regulator, operator; self-check: institution, operator; history: all; control:
 * regulator, operator; ingest: operator. */
bool tw_auth_role_admitted(tw_role_t role, tw_view_t view);

/*
 * tw_auth_scope_allows: whether client may subscribe to (or ask history for) prefix[0..len) on
 * view. An operator may read anything. A regulator may read a feed or history prefix that starts
 * with its whole scope (scope "4401": "4401", "440106", "440106/high/" yes; "44", "", "4402"
 * no). An institution may read exactly its own credit code on the self-check feed or history.
 * Everything else is refused. Pure function.
 */
bool tw_auth_scope_allows(const tw_client_t *client, tw_view_t view, const char *prefix,
                          size_t len);

const char *tw_role_name(tw_role_t role);
const char *tw_view_name(tw_view_t view); /* also the endpoint's ZAP domain */

/*
 * tw_auth_endpoint_is_local: 1 when endpoint can only be reached from this host: ipc://,
 * inproc://, tcp://127.x.x.x:port, tcp://localhost:port or tcp://[::1]:port; else 0.
 */
int tw_auth_endpoint_is_local(const char *endpoint);

/*
 * tw_auth_server_socket: make sock a CURVE server with the engine's key whose connections are
 * checked by the ZAP handler under view's domain. Call before zmq_bind. Returns 0 or TW_EZMQ.
 */
int tw_auth_server_socket(const tw_auth_t *auth, void *sock, tw_view_t view);

/*
 * tw_auth_client_socket: make sock a CURVE client with its key pair (Z85) trusting server_z85.
 * Call before zmq_connect. Returns 0 or TW_EZMQ.
 */
int tw_auth_client_socket(void *sock, const char *secret_z85, const char *public_z85,
                          const char *server_z85);

/*
 * ZAP handler: one thread per ZeroMQ context, bound to inproc://zeromq.zap.01 of ctx before this
 * returns, so any CURVE server socket bound afterwards is checked. It admits a CURVE key listed
 * in auth whose role tw_auth_role_admitted for the socket's domain (the User-Id of its messages
 * is then the client's name) and refuses and logs (prefix: log_prefix) every other attempt.
 * auth must outlive the handler. Stop: zmq_ctx_term(ctx) (or shutdown) ends the thread's wait,
 * then tw_auth_zap_join frees it. Returns 0, TW_EZMQ or TW_ENOMEM.
 */
typedef struct tw_auth_zap tw_auth_zap_t;
int tw_auth_zap_start(const tw_auth_t *auth, void *ctx, const char *log_prefix,
                      tw_auth_zap_t **out);
void tw_auth_zap_join(tw_auth_zap_t *zap); /* after the context is terminated; NULL accepted */

/*
 * tw_auth_recv_request: take one request from a ROUTER socket without blocking: a multipart
 * message [identity, "", request] as a REQ (or a DEALER sending the empty delimiter) sends it.
 * On 1, parts[0..3) hold the identity, the delimiter and the request (the caller closes all
 * three; the request's "User-Id" property names a CURVE client). Returns 0 when nothing was
 * waiting or the message had another shape, or a request over max_bytes (0: no bound): it is
 * then dropped whole, nothing is left open.
 */
int tw_auth_recv_request(void *router, zmq_msg_t parts[3], size_t max_bytes);

#endif
