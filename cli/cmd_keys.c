/*
 * cmd_keys.c: `tutorwatch keys gen NAME`: make a CURVE key pair for the engine or a client.
 *
 * Writes NAME.key (the Z85 secret key on one line, mode 0600, never overwritten) and NAME.pub
 * (the Z85 public key on one line). The engine takes its own with `run --server-key NAME.key`;
 * a client's .pub line goes into the keys file (`run --keys FILE`) with its role and scope.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tw_auth.h"
#include "tw_cli.h"
#include "tw_error.h"

static void keys_usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch keys gen NAME\n"
      "\n"
      "Make a CURVE key pair: NAME.key holds the secret key (Z85, one line, mode 0600) and\n"
      "NAME.pub the public key (Z85, one line). Existing files are never overwritten.\n"
      "\n"
      "The engine uses its pair with `run --server-key NAME.key`; clients give\n"
      "`--key NAME.key --server-pub ENGINE.pub`. The keys file (`run --keys FILE`) lists\n"
      "each client's public key with a role and a scope:\n"
      "\n"
      "  clients:\n"
      "    - {name: gz-bureau, public_key: \"<NAME.pub line>\", role: regulator, scope: \"4401\"}\n"
      "    - {name: inst-a, public_key: \"...\", role: institution, scope: \"<credit code>\"}\n"
      "    - {name: ops, public_key: \"...\", role: operator}\n"
      "\n"
      "Exit status: 0 written, 1 a file exists or cannot be written, 2 usage error.\n"
      "\n"
      "example:\n"
      "  tutorwatch keys gen engine && tutorwatch keys gen gz-bureau\n");
}

int tw_cmd_keys(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    keys_usage(stdout);
    return 0;
  }
  if (argc != 3 || strcmp(argv[1], "gen") != 0 || argv[2][0] == '\0' || argv[2][0] == '-') {
    keys_usage(stderr);
    return 2;
  }
  int rc = tw_auth_keygen(argv[2]);
  switch (rc) {
    case 0:
      fprintf(stderr, "tutorwatch keys: wrote %s.key (secret, mode 0600) and %s.pub\n", argv[2],
              argv[2]);
      return 0;
    case TW_EEXIST:
      fprintf(stderr, "tutorwatch keys: %s.key or %s.pub exists; not overwritten\n", argv[2],
              argv[2]);
      return 1;
    case TW_ECRYPTO:
      fprintf(stderr, "tutorwatch keys: this libzmq has no CURVE support\n");
      return 1;
    case TW_EINVAL:
      fprintf(stderr, "tutorwatch keys: bad name '%s'\n", argv[2]);
      return 2;
    default:
      fprintf(stderr, "tutorwatch keys: cannot write %s.key: %s\n", argv[2], strerror(errno));
      return 1;
  }
}
