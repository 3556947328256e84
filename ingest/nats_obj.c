/*
 * nats_obj.c: the object-store layout of NATS (ADR-20) over plain JetStream (contract in
 * tw_nats_obj.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nats_internal.h"
#include "tw_error.h"
#include "tw_nats_obj.h"

#define OBJ_WAIT_MS 5000
#define OBJ_SUBJECT_MAX 512

static int valid_bucket(const char *b) {
  if (b == NULL || b[0] == '\0' || strlen(b) > 64) return 0;
  for (const char *p = b; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_'))
      return 0;
  return 1;
}

static int valid_name(const char *n) {
  return n != NULL && n[0] != '\0' && strlen(n) <= TW_NATS_OBJ_NAME_MAX;
}

/* $O.<bucket>.M.<base64url(name), padded, as NATS writes it> */
static void meta_subject(const char *bucket, const char *name, char *out, size_t cap) {
  char b64[sodium_base64_ENCODED_LEN(TW_NATS_OBJ_NAME_MAX, sodium_base64_VARIANT_URLSAFE)];
  sodium_bin2base64(b64, sizeof b64, (const unsigned char *)name, strlen(name),
                    sodium_base64_VARIANT_URLSAFE);
  snprintf(out, cap, "$O.%s.M.%s", bucket, b64);
}

int tw_nats_obj_bucket(void *jsv, const char *bucket, int replicas, char *errbuf, size_t errcap) {
  jsCtx *js = jsv;
  if (js == NULL || !valid_bucket(bucket)) return TW_EINVAL;
  char stream[96], chunks[96], metas[96];
  snprintf(stream, sizeof stream, "OBJ_%s", bucket);
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
  jsStreamInfo_Destroy(si);
  if (s == NATS_OK) return 0;
  if (s != NATS_NOT_FOUND) {
    tw__nats_err(errbuf, errcap, stream, s, jerr);
    return TW_EIO;
  }
  snprintf(chunks, sizeof chunks, "$O.%s.C.>", bucket);
  snprintf(metas, sizeof metas, "$O.%s.M.>", bucket);
  const char *subj[2] = {chunks, metas};
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  sc.Name = stream;
  sc.Subjects = subj;
  sc.SubjectsLen = 2;
  sc.Storage = js_FileStorage;
  sc.Replicas = replicas > 0 ? replicas : 1;
  sc.Discard = js_DiscardNew;
  sc.AllowRollup = true;
  sc.AllowDirect = true;
  si = NULL;
  jerr = 0;
  s = js_AddStream(&si, js, &sc, NULL, &jerr);
  jsStreamInfo_Destroy(si);
  if (s != NATS_OK && jerr != JSStreamNameExistErr) {
    tw__nats_err(errbuf, errcap, "cannot create the object store", s, jerr);
    return TW_EIO;
  }
  return 0;
}

/* Publish with retries on transient failures (a lost node, an election). */
static natsStatus publish_msg(jsCtx *js, natsMsg *m, jsErrCode *jerr) {
  natsStatus s;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = OBJ_WAIT_MS;
  for (int attempt = 1;; attempt++) {
    jsPubAck *pa = NULL;
    *jerr = 0;
    s = js_PublishMsg(&pa, js, m, &po, jerr);
    jsPubAck_Destroy(pa);
    if (s == NATS_OK || !tw__nats_transient(s) || attempt >= 20) return s;
    nats_Sleep(500);
  }
}

/* Read the metadata of name: the JSON object (caller decrefs) or NULL with *rc set (TW_ENOENT
 * when absent). */
static json_t *read_meta(jsCtx *js, const char *bucket, const char *name, int *rc, char *errbuf,
                         size_t errcap, uint64_t *seq) {
  char stream[96], subject[OBJ_SUBJECT_MAX];
  snprintf(stream, sizeof stream, "OBJ_%s", bucket);
  meta_subject(bucket, name, subject, sizeof subject);
  natsMsg *m = NULL;
  jsErrCode jerr = 0;
  /* A direct get: any replica answers, so a stream electing its leader does not stall it. */
  jsDirectGetMsgOptions dg;
  jsDirectGetMsgOptions_Init(&dg);
  dg.LastBySubject = subject;
  natsStatus s = js_DirectGetMsg(&m, js, stream, NULL, &dg);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr || jerr == JSNoMessageFoundErr) {
    *rc = TW_ENOENT;
    return NULL;
  }
  if (s != NATS_OK) {
    tw__nats_err(errbuf, errcap, "object metadata", s, jerr);
    *rc = TW_EIO;
    return NULL;
  }
  const char *seq_text = NULL;
  if (seq != NULL)
    *seq = natsMsgHeader_Get(m, "Nats-Sequence", &seq_text) == NATS_OK
               ? strtoull(seq_text, NULL, 10)
               : 0;
  json_error_t je;
  json_t *o = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &je);
  natsMsg_Destroy(m);
  if (o == NULL || !json_is_object(o) || !json_is_string(json_object_get(o, "nuid")) ||
      !json_is_integer(json_object_get(o, "size")) ||
      !json_is_integer(json_object_get(o, "chunks"))) {
    if (o != NULL && json_is_true(json_object_get(o, "deleted"))) {
      json_decref(o);
      *rc = TW_ENOENT;
      return NULL;
    }
    json_decref(o);
    snprintf(errbuf, errcap, "object %s/%s: its metadata is not an object-store record", bucket,
             name);
    *rc = TW_EIO;
    return NULL;
  }
  *rc = 0;
  return o;
}

static uint64_t meta_tag(json_t *o) {
  json_t *h = json_object_get(json_object_get(o, "headers"), "Tw-Tag");
  json_t *v = json_is_array(h) ? json_array_get(h, 0) : NULL;
  return json_is_string(v) ? strtoull(json_string_value(v), NULL, 10) : 0;
}

int tw_nats_obj_info(void *jsv, const char *bucket, const char *name, int *found, uint64_t *tag,
                     uint64_t *size_bytes, char *errbuf, size_t errcap) {
  *found = 0;
  if (jsv == NULL || !valid_bucket(bucket) || !valid_name(name)) return TW_EINVAL;
  int rc = 0;
  json_t *o = read_meta(jsv, bucket, name, &rc, errbuf, errcap, NULL);
  if (o == NULL) return rc == TW_ENOENT ? 0 : rc;
  *found = 1;
  if (tag != NULL) *tag = meta_tag(o);
  if (size_bytes != NULL) *size_bytes = (uint64_t)json_integer_value(json_object_get(o, "size"));
  json_decref(o);
  return 0;
}

static void digest_text(const unsigned char sum[crypto_hash_sha256_BYTES], char *out, size_t cap) {
  char b64[sodium_base64_ENCODED_LEN(crypto_hash_sha256_BYTES, sodium_base64_VARIANT_URLSAFE)];
  sodium_bin2base64(b64, sizeof b64, sum, crypto_hash_sha256_BYTES, sodium_base64_VARIANT_URLSAFE);
  snprintf(out, cap, "SHA-256=%s", b64);
}

int tw_nats_obj_put(void *jsv, const char *bucket, int replicas, const char *name,
                    const char *path, uint64_t tag, char *errbuf, size_t errcap) {
  jsCtx *js = jsv;
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (js == NULL || !valid_bucket(bucket) || !valid_name(name) || path == NULL) return TW_EINVAL;
  if (sodium_init() < 0) return TW_EIO;
  (void)replicas;
  int rc = 0, prc = 0;
  uint64_t old_seq = 0;
  json_t *old = read_meta(js, bucket, name, &prc, errbuf, errcap, &old_seq);
  if (old == NULL && prc != TW_ENOENT) return prc;
  char old_nuid[64] = "";
  if (old != NULL) {
    snprintf(old_nuid, sizeof old_nuid, "%s", json_string_value(json_object_get(old, "nuid")));
    uint64_t old_tag = meta_tag(old);
    if (old_tag > tag) { /* a newer object is there: this writer is behind (a stale owner) */
      snprintf(errbuf, errcap, "object %s/%s already holds tag %llu, newer than %llu", bucket,
               name, (unsigned long long)old_tag, (unsigned long long)tag);
      json_decref(old);
      return TW_EAGAIN;
    }
  }
  json_decref(old);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(errbuf, errcap, "cannot read '%s': %s", path, strerror(errno));
    return TW_EIO;
  }
  unsigned char rnd[16];
  randombytes_buf(rnd, sizeof rnd);
  char nuid[33], chunk_subject[OBJ_SUBJECT_MAX];
  sodium_bin2hex(nuid, sizeof nuid, rnd, sizeof rnd);
  snprintf(chunk_subject, sizeof chunk_subject, "$O.%s.C.%s", bucket, nuid);
  crypto_hash_sha256_state hs;
  crypto_hash_sha256_init(&hs);
  char *buf = malloc(TW_NATS_OBJ_CHUNK_BYTES);
  if (buf == NULL) {
    close(fd);
    return TW_ENOMEM;
  }
  uint64_t size = 0, chunks = 0;
  rc = 0;
  for (;;) {
    size_t got = 0;
    while (got < TW_NATS_OBJ_CHUNK_BYTES) {
      ssize_t r = read(fd, buf + got, TW_NATS_OBJ_CHUNK_BYTES - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        snprintf(errbuf, errcap, "cannot read '%s': %s", path, strerror(errno));
        rc = TW_EIO;
      }
      if (r <= 0) break;
      got += (size_t)r;
    }
    if (rc != 0 || got == 0) break;
    crypto_hash_sha256_update(&hs, (const unsigned char *)buf, got);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsMsg_Create(&m, chunk_subject, NULL, buf, (int)got);
    if (s == NATS_OK) s = publish_msg(js, m, &jerr);
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
      tw__nats_err(errbuf, errcap, "object chunk", s, jerr);
      rc = TW_EIO;
      break;
    }
    size += got;
    chunks++;
    if (got < TW_NATS_OBJ_CHUNK_BYTES) break;
  }
  close(fd);
  free(buf);
  char subject[OBJ_SUBJECT_MAX], stream[96], *text = NULL;
  snprintf(stream, sizeof stream, "OBJ_%s", bucket);
  if (rc == 0) {
    unsigned char sum[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&hs, sum);
    char digest[96], tagbuf[24], mtime[40];
    digest_text(sum, digest, sizeof digest);
    snprintf(tagbuf, sizeof tagbuf, "%llu", (unsigned long long)tag);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(mtime, sizeof mtime, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *meta = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:{s:[s]}, s:{s:i}}", "name",
                             name, "bucket", bucket, "nuid", nuid, "size", (json_int_t)size,
                             "chunks", (json_int_t)chunks, "mtime", mtime, "digest", digest,
                             "headers", "Tw-Tag", tagbuf, "options", "max_chunk_size",
                             (int)TW_NATS_OBJ_CHUNK_BYTES);
    text = meta != NULL ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    if (text == NULL) rc = TW_ENOMEM;
  }
  if (rc == 0) {
    meta_subject(bucket, name, subject, sizeof subject);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsMsg_Create(&m, subject, NULL, text, (int)strlen(text));
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Rollup", "sub");
    /* Compare-and-set: written only over the metadata read above (none: 0), so two writers
     * racing cannot leave the older object last. */
    char expect[24];
    snprintf(expect, sizeof expect, "%llu", (unsigned long long)old_seq);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", expect);
    if (s == NATS_OK) s = publish_msg(js, m, &jerr);
    natsMsg_Destroy(m);
    if (s != NATS_OK && jerr == JSStreamWrongLastSequenceErr) {
      snprintf(errbuf, errcap, "object %s/%s was written by another writer meanwhile", bucket,
               name);
      rc = TW_EAGAIN;
    } else if (s != NATS_OK) {
      tw__nats_err(errbuf, errcap, "object metadata", s, jerr);
      rc = TW_EIO;
    }
  }
  free(text);
  /* The chunks nobody reads any more: the old object's after a success, the new ones after a
   * failure. A failed purge only leaves bytes behind. */
  const char *drop = rc == 0 ? old_nuid : nuid;
  if (drop[0] != '\0') {
    jsOptions o;
    jsOptions_Init(&o);
    snprintf(subject, sizeof subject, "$O.%s.C.%s", bucket, drop);
    o.Stream.Purge.Subject = subject;
    jsErrCode jerr = 0;
    (void)js_PurgeStream(js, stream, &o, &jerr);
  }
  return rc;
}

int tw_nats_obj_get(void *jsv, const char *bucket, const char *name, const char *path,
                    char *errbuf, size_t errcap) {
  jsCtx *js = jsv;
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (js == NULL || !valid_bucket(bucket) || !valid_name(name) || path == NULL) return TW_EINVAL;
  if (sodium_init() < 0) return TW_EIO;
  int rc = 0;
  json_t *meta = read_meta(js, bucket, name, &rc, errbuf, errcap, NULL);
  if (meta == NULL) return rc;
  uint64_t size = (uint64_t)json_integer_value(json_object_get(meta, "size"));
  int64_t chunks = json_integer_value(json_object_get(meta, "chunks"));
  const char *want_digest = json_string_value(json_object_get(meta, "digest"));
  char chunk_subject[OBJ_SUBJECT_MAX], stream[96];
  snprintf(chunk_subject, sizeof chunk_subject, "$O.%s.C.%s", bucket,
           json_string_value(json_object_get(meta, "nuid")));
  snprintf(stream, sizeof stream, "OBJ_%s", bucket);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(errbuf, errcap, "cannot write '%s': %s", path, strerror(errno));
    json_decref(meta);
    return TW_EIO;
  }
  crypto_hash_sha256_state hs;
  crypto_hash_sha256_init(&hs);
  uint64_t got = 0, next_seq = 1;
  /* The chunks in stream order, each by a direct get of the next message on the chunk subject
   * (served by any replica; no consumer to make, which a cluster would do through its leaders). */
  for (int64_t i = 0; i < chunks && rc == 0; i++) {
    natsMsg *m = NULL;
    jsDirectGetMsgOptions dg;
    jsDirectGetMsgOptions_Init(&dg);
    dg.Sequence = next_seq;
    dg.NextBySubject = chunk_subject;
    natsStatus s = js_DirectGetMsg(&m, js, stream, NULL, &dg);
    const char *seq_text = NULL;
    if (s == NATS_OK && natsMsgHeader_Get(m, "Nats-Sequence", &seq_text) != NATS_OK) s = NATS_ERR;
    if (s != NATS_OK) {
      tw__nats_err(errbuf, errcap, "object chunk", s, 0);
      natsMsg_Destroy(m);
      rc = TW_EIO;
      break;
    }
    next_seq = strtoull(seq_text, NULL, 10) + 1;
    const char *d = natsMsg_GetData(m);
    size_t n = (size_t)natsMsg_GetDataLength(m);
    crypto_hash_sha256_update(&hs, (const unsigned char *)d, n);
    size_t off = 0;
    while (off < n) {
      ssize_t w = write(fd, d + off, n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        snprintf(errbuf, errcap, "cannot write '%s': %s", path, strerror(errno));
        rc = TW_EIO;
        break;
      }
      off += (size_t)w;
    }
    got += n;
    natsMsg_Destroy(m);
  }
  if (rc == 0) {
    unsigned char sum[crypto_hash_sha256_BYTES];
    char digest[96];
    crypto_hash_sha256_final(&hs, sum);
    digest_text(sum, digest, sizeof digest);
    if (got != size || want_digest == NULL || strcmp(digest, want_digest) != 0) {
      snprintf(errbuf, errcap,
               "object %s/%s: got %llu bytes with digest %s; its metadata says %llu bytes, %s",
               bucket, name, (unsigned long long)got, digest, (unsigned long long)size,
               want_digest ? want_digest : "no digest");
      rc = TW_EIO;
    }
  }
  if (rc == 0 && fsync(fd) != 0) {
    snprintf(errbuf, errcap, "cannot write '%s': %s", path, strerror(errno));
    rc = TW_EIO;
  }
  close(fd);
  if (rc != 0) unlink(path);
  json_decref(meta);
  return rc;
}
