/*
 * pseudo.c: keyed pseudonyms for personal identifiers (see tw_pseudo.h).
 *
 * The key file is written whole to a temporary file (mode 0600) and linked into place, so two
 * processes starting on an empty state directory cannot each write a different key (the loser of
 * the race reads the winner's) and a process killed while creating it leaves no partial key. A key
 * file of any size other than 32 bytes is refused, never truncated or padded. Hashing is one
 * BLAKE2b call per identifier over at most TW_EVENT_MAX_BYTES; no allocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_pseudo.h"

#define PSEUDO_HASH_BYTES 16

static int read_key(int fd, tw_pseudo_key_t *out) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != TW_PSEUDO_KEY_BYTES)
    return TW_EIO;
  size_t got = 0;
  while (got < TW_PSEUDO_KEY_BYTES) {
    ssize_t n = read(fd, out->key + got, TW_PSEUDO_KEY_BYTES - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return TW_EIO;
    got += (size_t)n;
  }
  return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return TW_EIO;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* create_key: write key (NULL: a fresh random one) to a temporary file, fsync it, then link it
 * into place. link() fails with EEXIST when another process won the race, and a process killed
 * at any point leaves either no key file or a whole one (at worst a stray temporary file, removed
 * next time). */
static int create_key(const char *dir, const char *path, const tw_pseudo_key_t *key) {
  char tmp[4200];
  tw_pseudo_key_t fresh;
  int rc = 0;
  if (snprintf(tmp, sizeof tmp, "%s/pseudonym.key.tmp.%ld", dir, (long)getpid()) >= (int)sizeof tmp)
    return TW_EIO;
  unlink(tmp); /* left by a killed process that had our pid */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return TW_EIO;
  if (key != NULL)
    fresh = *key;
  else
    randombytes_buf(fresh.key, sizeof fresh.key);
  rc = write_all(fd, fresh.key, sizeof fresh.key);
  sodium_memzero(&fresh, sizeof fresh);
  if (rc == 0 && fsync(fd) != 0) rc = TW_EIO;
  if (close(fd) != 0 && rc == 0) rc = TW_EIO;
  if (rc == 0 && link(tmp, path) != 0 && errno != EEXIST) rc = TW_EIO;
  unlink(tmp);
  if (rc == 0) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* make the new name durable */
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
  }
  return rc;
}

/* load: read DIR/pseudonym.key; when absent, TW_ENOENT if !create, else install `given` (NULL: a
 * random key) and read what is then in place (ours, or the one a concurrent process linked). */
static int load(const char *dir, bool create, const tw_pseudo_key_t *given, tw_pseudo_key_t *out) {
  char path[4096];
  int fd = -1, rc;
  if (sodium_init() < 0) return TW_ECRYPTO;
  if (snprintf(path, sizeof path, "%s/pseudonym.key", dir) >= (int)sizeof path) return TW_EIO;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && !create) {
    sodium_memzero(out, sizeof *out);
    return TW_ENOENT;
  }
  if (fd < 0 && errno == ENOENT) {
    if ((rc = create_key(dir, path, given)) != 0) goto fail;
    fd = open(path, O_RDONLY | O_CLOEXEC); /* ours, or the one a concurrent process linked */
  }
  if (fd < 0) {
    rc = TW_EIO;
    goto fail;
  }
  if ((rc = read_key(fd, out)) != 0) goto fail;
  close(fd);
  return 0;
fail:
  if (fd >= 0) close(fd);
  sodium_memzero(out, sizeof *out);
  return rc;
}

int tw_pseudo_key_load(const char *dir, tw_pseudo_key_t *out) {
  return load(dir, true, NULL, out);
}

int tw_pseudo_key_read(const char *dir, tw_pseudo_key_t *out) {
  return load(dir, false, NULL, out);
}

int tw_pseudo_key_install(const char *dir, const tw_pseudo_key_t *key, tw_pseudo_key_t *out) {
  return load(dir, true, key, out);
}

void tw_pseudo_hash(const tw_pseudo_key_t *key, const char *in, size_t len,
                    char out[TW_PSEUDO_LEN + 1]) {
  unsigned char h[PSEUDO_HASH_BYTES];
  crypto_generichash(h, sizeof h, (const unsigned char *)in, len, key->key, sizeof key->key);
  out[0] = 'p';
  out[1] = ':';
  sodium_bin2hex(out + 2, 2 * PSEUDO_HASH_BYTES + 1, h, sizeof h);
}

int tw_pseudo_apply(const tw_pseudo_key_t *key, const tw_schema_t *schema, tw_event_t *ev) {
  for (uint32_t s = 0; s < schema->n_fields; s++) {
    if (schema->fields[s].kind != TW_FK_PSEUDONYM || !(ev->present >> s & 1)) continue;
    if (ev->f[s].kind != TW_V_STR) continue;
    if (ev->arena_cap - ev->arena_used < TW_PSEUDO_LEN + 1) return TW_ETOOBIG;
    char *dst = ev->arena + ev->arena_used;
    const char *raw = ev->f[s].u.s.ptr;
    uint32_t raw_len = ev->f[s].u.s.len;
    tw_pseudo_hash(key, raw, raw_len, dst);
    ev->arena_used += TW_PSEUDO_LEN + 1;
    ev->f[s] = tw_value_str(dst, TW_PSEUDO_LEN);
    /* wipe the raw identifier when it lives in the arena, so no later dump of it shows it */
    if (raw >= ev->arena && raw + raw_len < ev->arena + ev->arena_cap)
      sodium_memzero(ev->arena + (raw - ev->arena), raw_len);
  }
  return 0;
}
