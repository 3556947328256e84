/*
 * gen.c: the synthetic event stream with ground truth (contract in tw_gen.h, rates in docs/gen.md).
 *
 * The simulation is a loop over days and, inside a day, over institutions in index order, with
 * one xoshiro256** stream seeded by splitmix64 from the seed: the order of draws is fixed, so the
 * output is a pure function of the options. Each day's events go into one buffer that is sorted
 * by (event time, creation order) and written before the next day starts; the buffer grows to the
 * busiest day and is then reused, so memory is O(institutions × students), never O(days).
 *
 * Ledger invariant: every prepaid package is paid in the stream at hours × price per hour and
 * every lesson consumes hours × the same price, so "collected − consumed − refunded" computed
 * from the stream equals the institution's real unused prepaid fees (never negative). The
 * closure-with-balance problem relies on it: its close event always leaves a positive balance.
 */
#include "tw_gen.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "tw_code.h"
#include "tw_event.h"
#include "tw_error.h"

#define MS_PER_MIN 60000LL
#define MS_PER_HOUR 3600000LL
#define MS_PER_DAY 86400000LL
#define TZ_OFFSET_MS (8 * MS_PER_HOUR) /* China Standard Time, +08:00 */

#define MAX_COURSES 4
#define EXTRA_SLOTS 2        /* student slots beyond the target size: a problem's new student */
#define EXTRA_SLOTS_SURGE 32 /* ... and for a collection surge (up to 7 a day for 5 days) */
#define MAX_BRANCHES 3
#define RUNAWAY_PHASE_DAYS 7 /* each phase of the run-away timeline */
#define NO_DAY (-1)

/* ---- PRNG: splitmix64 seeds xoshiro256** (Blackman & Vigna). ---- */

typedef struct gen_rng {
  uint64_t s[4];
} gen_rng_t;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(gen_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

static void rng_seed(gen_rng_t *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

/* Uniform in [0, n) for n >= 1 (Lemire's multiply-shift; the bias is below 2^-32). */
static uint32_t rng_below(gen_rng_t *r, uint32_t n) {
  return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* 1 with probability num/den. */
static int rng_chance(gen_rng_t *r, uint32_t num, uint32_t den) {
  return rng_below(r, den) < num;
}

/* ---- Static tables ---- */

static const char *const kTypeNames[TW_GEN_TYPE_COUNT] = {"payment",    "refund",    "consumption",
                                                          "enrollment", "complaint", "institution",
                                                          "escrow",     "staff"};
static const char *const kProblemNames[TW_GEN_PROBLEM_COUNT] = {
    "over_cap",         "unsupervised",   "complaint_storm",   "closure_with_balance",
    "split_orders",     "training_loan",  "release_ahead",     "escrow_drain",
    "collection_surge", "deep_discount",  "classes_stop",      "timeout_confirm",
    "refund_backlog",   "staff_exodus",   "unchecked_teacher", "branch_closures",
    "runaway",          "seasonal_surge", "planned_closure"};
/* The rule family (the pack's `family` label) each scenario should raise. */
static const char *const kProblemFamilies[TW_GEN_PROBLEM_COUNT] = {"collection_caps",
                                                                   "supervised_account",
                                                                   "complaints_staff",
                                                                   "closures",
                                                                   "collection_caps",
                                                                   "collection_caps",
                                                                   "supervised_account",
                                                                   "supervised_account",
                                                                   "collection_behaviour",
                                                                   "collection_behaviour",
                                                                   "delivery",
                                                                   "delivery",
                                                                   "refunds",
                                                                   "complaints_staff",
                                                                   "complaints_staff",
                                                                   "closures",
                                                                   "runaway",
                                                                   "healthy",
                                                                   "healthy"};

enum { CH_SUPERVISED, CH_UNSUPERVISED, CH_PAY_AFTER_CLASS, CH_TRAINING_LOAN, CH_INSTALMENT };
static const char *const kChannels[] = {"supervised", "unsupervised", "pay_after_class",
                                        "training_loan", "instalment"};
enum { CONF_PARENT, CONF_TIMEOUT };
static const char *const kConfirmedBy[] = {"parent", "timeout"};
enum { RF_REQUESTED, RF_PAID };
static const char *const kRefundStatus[] = {"requested", "paid"};
enum { EN_ENROLL, EN_WITHDRAW };
static const char *const kEnrollActions[] = {"enroll", "withdraw"};
enum { IN_CLOSE, IN_SUSPEND, IN_RELOCATE, IN_CLOSURE_NOTICE, IN_BRANCH_CLOSE };
static const char *const kInstActions[] = {"close", "suspend", "relocate", "closure_notice",
                                           "branch_close"};
enum { ES_DEPOSIT, ES_RELEASE, ES_WITHDRAW };
static const char *const kEscrowActions[] = {"deposit", "release", "withdraw"};
enum { ST_HIRE, ST_LEAVE, ST_WAGE_ARREARS, ST_CHECK_PASSED, ST_CHECK_FAILED };
static const char *const kStaffActions[] = {"hire", "leave", "wage_arrears", "check_passed",
                                            "check_failed"};

typedef struct gen_course {
  const char *title;
  const char *category;
  int32_t min_price_fen, max_price_fen; /* per class hour */
} gen_course_t;

static const gen_course_t kCourses[] = {
    {"少儿编程入门", "science", 15000, 25000}, {"机器人搭建", "science", 18000, 30000},
    {"科学实验课", "science", 12000, 20000},   {"美术素描", "arts", 10000, 20000},
    {"少儿国画", "arts", 10000, 18000},        {"钢琴一对一", "arts", 20000, 30000},
    {"街舞基础", "arts", 8000, 15000},         {"硬笔书法", "arts", 8000, 15000},
    {"围棋启蒙", "other", 10000, 18000},       {"国际象棋", "other", 10000, 18000},
    {"英语口语", "language", 12000, 25000},    {"少儿演讲与口才", "language", 10000, 20000},
    {"篮球训练营", "sports", 8000, 15000},     {"游泳进阶", "sports", 12000, 20000},
    {"跆拳道", "sports", 8000, 15000},         {"乒乓球", "sports", 8000, 15000},
};
#define N_COURSES (sizeof kCourses / sizeof kCourses[0])

typedef struct gen_text {
  const char *category;
  const char *text;
} gen_text_t;

/* Mild everyday complaints: no run-away, closure, refund-refused or wage words (some name a
 * refund that went through, as real ones do). */
static const gen_text_t kMildComplaints[] = {
    {"teaching", "老师讲课一般"},
    {"service", "教室空调太冷"},
    {"service", "排课时间不方便"},
    {"teaching", "作业布置得有点多"},
    {"service", "前台态度不太好"},
    {"safety", "楼道灯坏了，希望尽快修好"},
    {"service", "附近停车不方便"},
    {"teaching", "换了老师，孩子不太适应"},
    {"refund", "退费流程有点慢，不过已经到账了"},
    {"service", "上课时间临时调整没有提前通知"},
    {"teaching", "课堂纪律不太好，孩子说听不清"},
    {"service", "收费明细看不太懂，希望解释一下"},
    {"safety", "接送时门口太挤"},
    {"teaching", "老师 讲得太快了"},
};
#define N_MILD (sizeof kMildComplaints / sizeof kMildComplaints[0])

/* Run-away signs: the texts of a complaint storm and of the days after a closure, with the
 * variation of real complaints: synonyms (卷款/卷钱, 失联/联系不上), spaces, full-width
 * characters and homophone typos (退废 for 退费, 欠新 for 欠薪). */
static const gen_text_t kStormComplaints[] = {
    {"other", "老板跑路了，课也停了"},
    {"refund", "机构突然关门，退费难"},
    {"other", "联系不上校长"},
    {"other", "老师说欠薪三个月"},
    {"refund", "卷款跑路"},
    {"refund", "申请退费一个月了还没退，机构拒绝退费"},
    {"teaching", "课停了，老师都走了，停课也不通知"},
    {"other", "门店关门了，电话打不通"},
    {"refund", "退 费 难，打了十几个电话没人管"},
    {"other", "校长失联，前台说不知道"},
    {"refund", "交了两万多，现在人去楼空"},
    {"refund", "机构卷钱跑了！！！"},
    {"other", "老师们被欠新好几个月了"},
    {"refund", "退废难，一直拖着不给退"},
    {"other", "ＸＸ教育倒闭了吗？门口贴了停课通知"},
    {"refund", "跑　路了，大家赶紧去报警"},
    {"other", "听说老师工资没发，已经停课一周"},
    {"refund", "要求退费，对方说不退费只能转课"},
};
#define N_STORM (sizeof kStormComplaints / sizeof kStormComplaints[0])

/* Natural variation around a complaint: how parents open and close a complaint. */
static const char *const kComplaintPrefixes[] = {
    "", "", "", "家长反映：", "我是学生家长，", "投诉：", "【投诉】", "您好，"};
static const char *const kComplaintSuffixes[] = {
    "", "", "", "。", "！", "，请尽快处理", "，希望管理部门介入。", "？？", " "};
#define N_PREFIXES (sizeof kComplaintPrefixes / sizeof kComplaintPrefixes[0])
#define N_SUFFIXES (sizeof kComplaintSuffixes / sizeof kComplaintSuffixes[0])

static const char kCodeAlphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY"; /* GB 32100-2015, 31 */

/* ---- State ---- */

enum { SLOT_FREE = 0, SLOT_ACTIVE, SLOT_LEAVING };
enum {
  PAY_NORMAL,
  PAY_MAX,
  PAY_OVER_CAP,
  PAY_UNSUPERVISED,
  PAY_LOAN,
  PAY_DISCOUNT,
  PAY_SPLIT,      /* a year card split into three orders at the caps, within hours */
  PAY_SPLIT_PART, /* one of the later two */
  PAY_OVER_AMOUNT /* an over-cap package of 8,800 yuan: an over_cap institution's first sale */
};

typedef struct gen_student { /* 32 bytes: N × ~50 of these is the generator's memory */
  uint32_t serial;           /* student number within the institution */
  uint8_t state;             /* SLOT_* */
  uint8_t course;            /* index into the institution's courses */
  uint8_t weekday;           /* 0 = Monday */
  uint8_t lesson_hours;      /* 1 or 2 */
  uint8_t pay_after_class;   /* 1: pays after lessons, never prepays */
  uint8_t unpaid_lessons;    /* pay after class: lessons delivered, not yet paid */
  uint16_t lesson_minute;    /* local start, minutes after midnight */
  int16_t enrolled_day;      /* -1: enrolled before the period */
  int16_t refund_day;        /* day its pending refund is paid, NO_DAY when none */
  int16_t remaining_hours;   /* prepaid class hours left (<= 96 + 60) */
  int16_t unpaid_hours;      /* pay after class: hours delivered, not yet paid */
  int32_t unpaid_fen;        /* pay after class: fees of those hours (<= 4 × 2 × 300 yuan) */
  uint32_t refund_serial;    /* its pending refund request */
  int32_t refund_amount_fen; /* <= 156 hours × 300 yuan */
} gen_student_t;

typedef struct gen_inst {
  char id[TW_CREDIT_CODE_LEN + 1];
  uint16_t region;
  uint16_t branch_region[MAX_BRANCHES]; /* districts of its branches, same city when possible */
  uint8_t n_branches, branches_closed;
  int8_t problem; /* tw_gen_problem_t, or -1 when healthy */
  uint8_t closed;
  uint8_t settle_weekday;
  uint8_t n_courses;
  uint8_t course[MAX_COURSES];
  int32_t price_fen[MAX_COURSES]; /* per class hour */
  uint16_t target_students, n_slots;
  int32_t problem_day, close_day, storm_days, storm_count;
  int32_t last_complaint_day;
  uint32_t next_student, next_request, next_complaint;
  uint32_t staff, next_staff, left_staff; /* serving; serials hired; serials 1..left_staff left */
  int64_t pending_release_fen;            /* consumed since the last weekly escrow release */
  int64_t balance_fen;    /* collected − consumed − refunded, as the stream shows it */
  int64_t escrow_fen;     /* supervised account balance: deposits − releases − withdrawals */
  int64_t first_ts_ms;    /* first event showing the problem (onset); -1 until then */
  int64_t collapse_ts_ms; /* the close event of a collapse; -1 when none */
  uint8_t first_frac, collapse_frac;
  uint32_t unchecked_staff; /* UNCHECKED_TEACHER: the serial whose check failed; 0 when none */
  int32_t exodus_left;      /* STAFF_EXODUS: teachers still to leave */
  gen_student_t *students;  /* n_slots, inside gen_t.students */
} gen_inst_t;

typedef struct gen_event {
  int64_t ts_ms;
  uint32_t seq; /* creation order within the day: the tie-break */
  uint32_t inst;
  uint8_t type, action, frac, course;
  uint8_t confirmed_by, prefix, suffix; /* consumption: CONF_*; complaint: text variation */
  uint16_t text;                        /* complaint text; institution: branch region index */
  uint32_t student;                     /* serial */
  uint32_t ref;                         /* request, complaint or staff serial */
  int32_t class_hours, service_days;
  int64_t amount_fen, list_price_fen;
  int64_t balance_fen; /* escrow: the supervised balance after the movement */
} gen_event_t;

typedef struct gen {
  const tw_gen_opts_t *opts;
  gen_rng_t rng;
  gen_inst_t *inst;
  gen_student_t *students;
  gen_event_t *day;
  size_t day_len, day_cap;
  int32_t d;            /* current day index */
  int64_t day_start_ms; /* epoch ms of local midnight of day d */
  char date_prefix[16]; /* "YYYY-MM-DDT" of day d */
  uint64_t written;
  msgpack_sbuffer sbuf;
  msgpack_packer pk;
  tw_gen_stats_t stats;
} gen_t;
/* ---- Calendar (tw_days_from_civil / tw_civil_from_days in engine/timefmt.c) ---- */
/* ---- Calendar (Hinnant's civil-from-days algorithms, proleptic Gregorian) ---- */

int tw_gen_parse_date(const char *text, int64_t *day_out) {
  static const unsigned kMonthDays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (text == NULL || strlen(text) != 10 || text[4] != '-' || text[7] != '-') return TW_EINVAL;
  for (int i = 0; i < 10; i++)
    if (i != 4 && i != 7 && (text[i] < '0' || text[i] > '9')) return TW_EINVAL;
  int64_t y =
      (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 + (text[3] - '0');
  unsigned m = (unsigned)((text[5] - '0') * 10 + (text[6] - '0'));
  unsigned d = (unsigned)((text[8] - '0') * 10 + (text[9] - '0'));
  if (y < 1970 || m < 1 || m > 12 || d < 1 || d > kMonthDays[m - 1]) return TW_EINVAL;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (m == 2 && d == 29 && !leap) return TW_EINVAL;
  *day_out = tw_days_from_civil(y, m, d);
  return 0;
}

const char *tw_gen_type_name(int type) {
  return type >= 0 && type < TW_GEN_TYPE_COUNT ? kTypeNames[type] : "?";
}

const char *tw_gen_problem_name(int problem) {
  return problem >= 0 && problem < TW_GEN_PROBLEM_COUNT ? kProblemNames[problem] : "?";
}

const char *tw_gen_problem_family(int problem) {
  return problem >= 0 && problem < TW_GEN_PROBLEM_COUNT ? kProblemFamilies[problem] : "?";
}

void tw_gen_opts_default(tw_gen_opts_t *opts) {
  memset(opts, 0, sizeof *opts);
  opts->institutions = 100;
  opts->days = 30;
  opts->seed = 1;
  opts->start_day = tw_days_from_civil(2025, 3, 1);
  opts->format = TW_GEN_JSONL;
}

/* ---- Event buffer ---- */

/* emit: append an event of the current day at ms_of_day (clamped into the day); about 10% get a
 * millisecond fraction. Returns NULL only when the day buffer cannot grow. */
static gen_event_t *emit(gen_t *g, uint32_t inst, int type, int64_t ms_of_day) {
  if (g->day_len == g->day_cap) {
    size_t cap = g->day_cap ? g->day_cap * 2 : 4096;
    gen_event_t *grown = realloc(g->day, cap * sizeof *grown);
    if (grown == NULL) return NULL;
    g->day = grown;
    g->day_cap = cap;
  }
  gen_event_t *e = &g->day[g->day_len];
  memset(e, 0, sizeof *e);
  e->seq = (uint32_t)g->day_len++;
  e->inst = inst;
  e->type = (uint8_t)type;
  if (ms_of_day < 0) ms_of_day = 0;
  if (ms_of_day > MS_PER_DAY - 1000) ms_of_day = MS_PER_DAY - 1000;
  ms_of_day -= ms_of_day % 1000;
  if (rng_chance(&g->rng, 1, 10)) {
    ms_of_day += rng_below(&g->rng, 1000);
    e->frac = 1;
  }
  e->ts_ms = g->day_start_ms + ms_of_day;
  return e;
}

/* A random time of day between from_min and to_min (minutes after midnight), to the second. */
static int64_t rand_time(gen_t *g, int from_min, int to_min) {
  uint32_t span_s = (uint32_t)(to_min - from_min) * 60u;
  return from_min * MS_PER_MIN + (int64_t)rng_below(&g->rng, span_s ? span_s : 1) * 1000;
}

static void note_problem(gen_inst_t *in, const gen_event_t *e) {
  if (in->first_ts_ms < 0 || e->ts_ms < in->first_ts_ms) {
    in->first_ts_ms = e->ts_ms;
    in->first_frac = e->frac;
  }
}

/* ---- Behaviour ---- */

/* active: the institution's scenario is `kind` and its problem day has come. */
static int active(const gen_t *g, const gen_inst_t *in, int kind) {
  return in->problem == kind && g->d >= in->problem_day;
}

/* runaway_phase: 0 discount surge, 1 lessons thin out, 2 wage arrears and teachers leave,
 * 3 refunds pile up unpaid, 4 complaint storm, 5 until the doors close; -1 before or elsewhere. */
static int runaway_phase(const gen_t *g, const gen_inst_t *in) {
  if (!active(g, in, TW_GEN_RUNAWAY)) return -1;
  int32_t p = (g->d - in->problem_day) / RUNAWAY_PHASE_DAYS;
  return p > 5 ? 5 : (int)p;
}

/* escrow: a movement on the supervised account at ms_of_day; keeps the balance. NULL on OOM. */
static gen_event_t *escrow(gen_t *g, uint32_t i, int action, int64_t amount, int64_t ms_of_day) {
  gen_inst_t *in = &g->inst[i];
  gen_event_t *e = emit(g, i, TW_GEN_ESCROW, ms_of_day);
  if (e == NULL) return NULL;
  e->action = (uint8_t)action;
  e->amount_fen = amount;
  in->escrow_fen += action == ES_DEPOSIT ? amount : -amount;
  e->balance_fen = in->escrow_fen;
  return e;
}

/* pay: a prepaid package for student s at ms_of_day, its escrow deposit unless unsupervised.
 * PAY_SPLIT pays the package and two more within hours (each within the caps).
 * Returns the payment's end time, or -1 on out of memory. */
static int64_t pay(gen_t *g, uint32_t i, gen_student_t *s, int64_t ms_of_day, int kind) {
  gen_inst_t *in = &g->inst[i];
  int32_t price = in->price_fen[s->course];
  int32_t lh = s->lesson_hours;
  int32_t max_hours = TW_GEN_CAP_AMOUNT_FEN / price;
  if (max_hours > TW_GEN_CAP_CLASS_HOURS) max_hours = TW_GEN_CAP_CLASS_HOURS;
  if (max_hours > lh * 12) max_hours = lh * 12;
  int32_t weeks_max = max_hours / lh;
  int32_t weeks = weeks_max;
  if (kind != PAY_MAX && kind != PAY_DISCOUNT && weeks_max > 5)
    weeks = 5 + (int32_t)rng_below(&g->rng, (uint32_t)weeks_max - 4);
  int32_t hours = weeks * lh;
  int32_t days = weeks * 7 + 14;
  if (days > TW_GEN_CAP_SERVICE_DAYS) days = TW_GEN_CAP_SERVICE_DAYS;
  int64_t amount = (int64_t)hours * price;
  int64_t list = amount;
  int channel = CH_SUPERVISED;
  if (kind == PAY_OVER_CAP || kind == PAY_OVER_AMOUNT) {
    switch (kind == PAY_OVER_AMOUNT ? 0 : rng_below(&g->rng, 3)) {
      case 0: /* an 8,800-yuan package */
        amount = 880000;
        hours = (int32_t)(amount / price);
        if (hours > TW_GEN_CAP_CLASS_HOURS) hours = TW_GEN_CAP_CLASS_HOURS;
        days = TW_GEN_CAP_SERVICE_DAYS;
        break;
      case 1: /* 96 class hours */
        hours = 96;
        amount = (int64_t)hours * price;
        days = TW_GEN_CAP_SERVICE_DAYS;
        break;
      default: /* a half-year card */
        days = 180;
        break;
    }
    list = amount;
  } else if (kind == PAY_UNSUPERVISED) {
    channel = CH_UNSUPERVISED;
  } else if (kind == PAY_LOAN) {
    channel = rng_chance(&g->rng, 1, 2) ? CH_TRAINING_LOAN : CH_INSTALMENT;
  } else if (kind == PAY_DISCOUNT) { /* 35-45% of the listed price */
    amount = amount * (35 + (int64_t)rng_below(&g->rng, 11)) / 100;
  } else if (kind == PAY_SPLIT || kind == PAY_SPLIT_PART) { /* a third of a year card */
    hours = TW_GEN_CAP_AMOUNT_FEN / price;
    if (hours > TW_GEN_CAP_CLASS_HOURS) hours = TW_GEN_CAP_CLASS_HOURS;
    amount = list = (int64_t)hours * price;
    days = TW_GEN_CAP_SERVICE_DAYS;
  }
  gen_event_t *e = emit(g, i, TW_GEN_PAYMENT, ms_of_day);
  if (e == NULL) return -1;
  e->student = s->serial;
  e->course = s->course;
  e->amount_fen = amount;
  e->list_price_fen = list;
  e->class_hours = hours;
  e->service_days = days;
  e->action = (uint8_t)channel;
  if (((kind == PAY_OVER_CAP || kind == PAY_OVER_AMOUNT) && in->problem == TW_GEN_OVER_CAP) ||
      (kind == PAY_UNSUPERVISED && in->problem == TW_GEN_UNSUPERVISED) ||
      (kind == PAY_LOAN && in->problem == TW_GEN_TRAINING_LOAN) ||
      (kind == PAY_DISCOUNT &&
       (in->problem == TW_GEN_DEEP_DISCOUNT || in->problem == TW_GEN_RUNAWAY)) ||
      (kind == PAY_MAX && g->d >= in->problem_day &&
       (in->problem == TW_GEN_SEASONAL_SURGE || in->problem == TW_GEN_CLOSURE_WITH_BALANCE)))
    note_problem(in, e);
  int64_t end = e->ts_ms - g->day_start_ms;
  if (channel != CH_UNSUPERVISED) {
    gen_event_t *dep = escrow(g, i, ES_DEPOSIT, amount, end + 1000 + rng_below(&g->rng, 90) * 1000);
    if (dep == NULL) return -1;
    end = dep->ts_ms - g->day_start_ms;
  }
  s->remaining_hours = (int16_t)(s->remaining_hours + hours);
  in->balance_fen += amount;
  if (kind == PAY_SPLIT) { /* two more orders within hours: together over the caps */
    for (int k = 0; k < 2; k++) {
      size_t before = g->day_len;
      end = pay(g, i, s, end + (20 + rng_below(&g->rng, 100)) * MS_PER_MIN, PAY_SPLIT_PART);
      if (end < 0) return -1;
      if (k == 0 && in->problem == TW_GEN_SPLIT_ORDERS) note_problem(in, &g->day[before]);
    }
  }
  return end;
}

/* The kind of package an institution sells today (its problem shows in it from the problem day). */
static int sale_kind(gen_t *g, const gen_inst_t *in) {
  if (in->problem < 0 || g->d < in->problem_day) return PAY_NORMAL;
  switch (in->problem) {
    case TW_GEN_OVER_CAP:
      return rng_chance(&g->rng, 1, 2) ? PAY_OVER_CAP : PAY_NORMAL;
    case TW_GEN_UNSUPERVISED:
      return rng_chance(&g->rng, 3, 5) ? PAY_UNSUPERVISED : PAY_NORMAL;
    case TW_GEN_SPLIT_ORDERS:
      return rng_chance(&g->rng, 1, 2) ? PAY_SPLIT : PAY_NORMAL;
    case TW_GEN_TRAINING_LOAN:
      return rng_chance(&g->rng, 1, 2) ? PAY_LOAN : PAY_NORMAL;
    case TW_GEN_DEEP_DISCOUNT:
      return rng_chance(&g->rng, 1, 2) ? PAY_DISCOUNT : PAY_NORMAL;
    case TW_GEN_RUNAWAY:
      return PAY_DISCOUNT;
    default:
      return PAY_NORMAL;
  }
}

static void setup_student(gen_t *g, gen_inst_t *in, gen_student_t *s, int pay_after_class_ok) {
  memset(s, 0, sizeof *s);
  s->serial = ++in->next_student;
  s->state = SLOT_ACTIVE;
  s->course = (uint8_t)rng_below(&g->rng, in->n_courses);
  s->weekday = (uint8_t)rng_below(&g->rng, 7);
  s->lesson_hours = (uint8_t)(rng_chance(&g->rng, 3, 5) ? 2 : 1);
  /* Offline lessons end by 20:30: weekdays start 16:00-18:30, weekends 9:00-18:00. */
  if (s->weekday < 5)
    s->lesson_minute = (uint16_t)(16 * 60 + 30 * rng_below(&g->rng, s->lesson_hours == 2 ? 6 : 8));
  else
    s->lesson_minute = (uint16_t)(9 * 60 + 30 * rng_below(&g->rng, 19));
  s->pay_after_class = (uint8_t)(pay_after_class_ok && rng_chance(&g->rng, 1, 10));
  s->enrolled_day = (int16_t)g->d;
  s->refund_day = NO_DAY;
}

/* enroll: a new student enrols (and prepays, unless paying after class). 0, or -1 on OOM. */
static int enroll(gen_t *g, uint32_t i, int kind) {
  gen_inst_t *in = &g->inst[i];
  gen_student_t *s = NULL;
  for (uint16_t k = 0; k < in->n_slots && s == NULL; k++)
    if (in->students[k].state == SLOT_FREE) s = &in->students[k];
  if (s == NULL) return 0;
  setup_student(g, in, s, kind == PAY_NORMAL);
  gen_event_t *e = emit(g, i, TW_GEN_ENROLLMENT, rand_time(g, 10 * 60, 19 * 60));
  if (e == NULL) return -1;
  e->student = s->serial;
  e->course = s->course;
  e->action = EN_ENROLL;
  if (s->pay_after_class) return 0;
  int64_t at = e->ts_ms - g->day_start_ms + (2 + rng_below(&g->rng, 14)) * MS_PER_MIN;
  return pay(g, i, s, at, kind) < 0 ? -1 : 0;
}

/* withdraw: student s leaves at ms_of_day; its slot is free again. 0, or -1 on OOM. */
static int withdraw(gen_t *g, uint32_t i, gen_student_t *s, int64_t ms_of_day) {
  gen_event_t *w = emit(g, i, TW_GEN_ENROLLMENT, ms_of_day);
  if (w == NULL) return -1;
  w->student = s->serial;
  w->course = s->course;
  w->action = EN_WITHDRAW;
  s->state = SLOT_FREE;
  return 0;
}

/* leave_with_refund: student s leaves at ms_of_day and asks for the unused hours back; the refund
 * is paid on a later day (paid_in_days from now), or never when paid_in_days is 0.
 * 0, or -1 on OOM. */
static int leave_with_refund(gen_t *g, uint32_t i, gen_student_t *s, int64_t at, int paid_in_days) {
  gen_inst_t *in = &g->inst[i];
  if (withdraw(g, i, s, at) < 0) return -1;
  gen_event_t *r = emit(g, i, TW_GEN_REFUND, at + 2 * MS_PER_MIN);
  if (r == NULL) return -1;
  s->refund_serial = ++in->next_request;
  s->refund_amount_fen = (int32_t)s->remaining_hours * in->price_fen[s->course];
  s->refund_day = paid_in_days > 0 ? (int16_t)(g->d + paid_in_days) : NO_DAY;
  r->student = s->serial;
  r->ref = s->refund_serial;
  r->amount_fen = s->refund_amount_fen;
  r->action = RF_REQUESTED;
  s->remaining_hours = 0;
  s->state = SLOT_LEAVING;
  if (paid_in_days == 0 && in->problem == TW_GEN_REFUND_BACKLOG) note_problem(in, r);
  return 0;
}

/* The teacher of student s today: one of the serving staff, serials (left_staff, next_staff]. */
static uint32_t teacher_of(const gen_inst_t *in, const gen_student_t *s) {
  uint32_t serving = in->next_staff - in->left_staff;
  return in->left_staff + 1 + (serving ? s->serial % serving : 0);
}

/* lesson: student s attends today's lesson; then renews, or withdraws, or (rarely) withdraws
 * early and asks for a refund of the unused hours. 0, or -1 on OOM. */
static int lesson(gen_t *g, uint32_t i, gen_student_t *s) {
  gen_inst_t *in = &g->inst[i];
  int32_t price = in->price_fen[s->course];
  int64_t start = s->lesson_minute * MS_PER_MIN;
  int closing_down = active(g, in, TW_GEN_PLANNED_CLOSURE);
  int phase = runaway_phase(g, in);
  if (!s->pay_after_class && s->remaining_hours < s->lesson_hours && !closing_down) {
    /* minutes and seconds before the lesson: two families rarely pay in the same second */
    int64_t at = start - (10 + rng_below(&g->rng, 50)) * MS_PER_MIN - rng_below(&g->rng, 60) * 1000;
    if (pay(g, i, s, at, sale_kind(g, in)) < 0) return -1;
  }
  if (!s->pay_after_class && s->remaining_hours < s->lesson_hours) /* closing down: nothing left */
    return withdraw(g, i, s, start);
  int64_t amount = (int64_t)s->lesson_hours * price;
  gen_event_t *e = emit(g, i, TW_GEN_CONSUMPTION, start + s->lesson_hours * MS_PER_HOUR);
  if (e == NULL) return -1;
  e->student = s->serial;
  e->course = s->course;
  e->class_hours = s->lesson_hours;
  e->amount_fen = amount;
  e->ref = teacher_of(in, s);
  /* Parents confirm most lessons on the platform; about 1 in 12 is confirmed by the timeout. */
  static const uint32_t kRunawayTimeouts[6] = {1, 4, 7, 8, 9, 9}; /* parents stop answering */
  uint32_t timeout_in_12 = active(g, in, TW_GEN_TIMEOUT_CONFIRM) ? 10
                           : phase >= 0                          ? kRunawayTimeouts[phase]
                                                                 : 1;
  e->confirmed_by = (uint8_t)(rng_chance(&g->rng, timeout_in_12, 12) ? CONF_TIMEOUT : CONF_PARENT);
  if (e->confirmed_by == CONF_TIMEOUT && in->problem == TW_GEN_TIMEOUT_CONFIRM &&
      g->d >= in->problem_day)
    note_problem(in, e);
  int64_t end = e->ts_ms - g->day_start_ms;
  if (s->pay_after_class) { /* settles every fourth lesson, or on leaving */
    int leaving = closing_down || rng_chance(&g->rng, 1, 40);
    s->unpaid_fen = (int32_t)(s->unpaid_fen + amount);
    s->unpaid_hours = (int16_t)(s->unpaid_hours + s->lesson_hours);
    in->balance_fen -= amount;
    if (++s->unpaid_lessons >= 4 || leaving) {
      gen_event_t *p =
          emit(g, i, TW_GEN_PAYMENT,
               end + (5 + rng_below(&g->rng, 25)) * MS_PER_MIN + rng_below(&g->rng, 60) * 1000);
      if (p == NULL) return -1;
      p->student = s->serial;
      p->course = s->course;
      p->amount_fen = p->list_price_fen = s->unpaid_fen;
      p->class_hours = s->unpaid_hours;
      p->service_days = 7 * s->unpaid_lessons;
      p->action = CH_PAY_AFTER_CLASS;
      in->balance_fen += s->unpaid_fen;
      s->unpaid_fen = 0;
      s->unpaid_hours = s->unpaid_lessons = 0;
    }
    if (leaving) return withdraw(g, i, s, end + (35 + rng_below(&g->rng, 30)) * MS_PER_MIN);
    return 0;
  }
  s->remaining_hours = (int16_t)(s->remaining_hours - s->lesson_hours);
  in->pending_release_fen += amount;
  in->balance_fen -= amount;
  int64_t later = end + (5 + rng_below(&g->rng, 60)) * MS_PER_MIN + rng_below(&g->rng, 60) * 1000;
  if (closing_down) /* planned closure: every unused hour refunded within 1-3 days */
    return s->remaining_hours > 0
               ? leave_with_refund(g, i, s, later, 1 + (int)rng_below(&g->rng, 3))
               : withdraw(g, i, s, later);
  if (s->remaining_hours < s->lesson_hours) {
    if (rng_chance(&g->rng, 4, 5)) {
      int64_t at = end + (10 + rng_below(&g->rng, 30)) * MS_PER_MIN + rng_below(&g->rng, 60) * 1000;
      return pay(g, i, s, at, sale_kind(g, in)) < 0 ? -1 : 0;
    }
    return withdraw(g, i, s, end + (5 + rng_below(&g->rng, 30)) * MS_PER_MIN);
  }
  if (active(g, in, TW_GEN_REFUND_BACKLOG) && rng_chance(&g->rng, 1, 8))
    return leave_with_refund(g, i, s, later, 0); /* asked, never paid */
  if (phase >= 3 && rng_chance(&g->rng, 1, 3)) return leave_with_refund(g, i, s, later, 0);
  if (rng_chance(&g->rng, 1, 250)) /* leaves mid-package: refund paid 1-5 days later */
    return leave_with_refund(g, i, s, later, 1 + (int)rng_below(&g->rng, 5));
  return 0;
}

static int complaint(gen_t *g, uint32_t i, const gen_text_t *table, uint32_t n, int64_t ms) {
  gen_inst_t *in = &g->inst[i];
  gen_event_t *e = emit(g, i, TW_GEN_COMPLAINT, ms);
  if (e == NULL) return -1;
  e->ref = ++in->next_complaint;
  e->text = (uint16_t)rng_below(&g->rng, n);
  e->prefix = (uint8_t)rng_below(&g->rng, N_PREFIXES);
  e->suffix = (uint8_t)rng_below(&g->rng, N_SUFFIXES);
  e->action = (uint8_t)(table == kStormComplaints); /* 1: storm table */
  in->last_complaint_day = g->d;
  if (table == kStormComplaints && in->problem == TW_GEN_COMPLAINT_STORM) note_problem(in, e);
  return 0;
}

static gen_event_t *staff_event(gen_t *g, uint32_t i, int action, uint32_t serial) {
  gen_event_t *e = emit(g, i, TW_GEN_STAFF, rand_time(g, 9 * 60, 18 * 60));
  if (e == NULL) return NULL;
  e->action = (uint8_t)action;
  e->ref = serial;
  return e;
}

/* hire: a new teacher, and the platform's background check an hour later (passed, unless
 * failed is set). 0, or -1 on OOM. */
static int hire(gen_t *g, uint32_t i, int failed) {
  gen_inst_t *in = &g->inst[i];
  in->staff++;
  gen_event_t *h = staff_event(g, i, ST_HIRE, ++in->next_staff);
  if (h == NULL) return -1;
  gen_event_t *c = emit(g, i, TW_GEN_STAFF, h->ts_ms - g->day_start_ms + MS_PER_HOUR);
  if (c == NULL) return -1;
  c->action = failed ? ST_CHECK_FAILED : ST_CHECK_PASSED;
  c->ref = in->next_staff;
  if (failed) {
    in->unchecked_staff = in->next_staff;
    if (in->problem == TW_GEN_UNCHECKED_TEACHER) note_problem(in, c);
  }
  return 0;
}

/* staff_leaves: the longest-serving teacher leaves. 0, or -1 on OOM. */
static int staff_leaves(gen_t *g, uint32_t i) {
  gen_inst_t *in = &g->inst[i];
  if (in->staff <= 1) return 0;
  in->staff--;
  gen_event_t *e = staff_event(g, i, ST_LEAVE, ++in->left_staff);
  if (e == NULL) return -1;
  if (in->problem == TW_GEN_STAFF_EXODUS && g->d >= in->problem_day) note_problem(in, e);
  return 0;
}

/* institution_event: close, suspend, notice or a branch closure at ms_of_day. NULL on OOM. */
static gen_event_t *institution_event(gen_t *g, uint32_t i, int action, int64_t ms_of_day) {
  gen_event_t *e = emit(g, i, TW_GEN_INSTITUTION, ms_of_day);
  if (e == NULL) return NULL;
  e->action = (uint8_t)action;
  if (action == IN_BRANCH_CLOSE) {
    gen_inst_t *in = &g->inst[i];
    e->ref = ++in->branches_closed; /* branch serials 1..n_branches close in order */
    e->text = in->branch_region[in->branches_closed - 1];
    if (in->problem == TW_GEN_BRANCH_CLOSURES && g->d >= in->problem_day) note_problem(in, e);
  }
  return e;
}

/* is_season: the enrolment seasons, by local month: February (spring term), July and August
 * (summer), September (autumn term). */
static int is_season(int64_t day) {
  int64_t y;
  unsigned m, dd;
  tw_civil_from_days(day, &y, &m, &dd);
  return m == 2 || m == 7 || m == 8 || m == 9;
}

/* surges: the scenario-driven bursts of sales of one day. 0, or -1 on OOM. */
static int surges(gen_t *g, uint32_t i) {
  gen_inst_t *in = &g->inst[i];
  int32_t d = g->d;
  int phase = runaway_phase(g, in);
  uint32_t new_students = 0, kind = PAY_MAX, rebuy_in_12 = 0;
  if (in->problem == TW_GEN_CLOSURE_WITH_BALANCE && d >= in->problem_day &&
      (d < in->close_day || in->close_day == in->problem_day)) {
    new_students = 3 + rng_below(&g->rng, 4); /* big packages, current students renew early */
    rebuy_in_12 = 3;
  } else if (phase == 0) { /* run-away: a discount campaign, mostly to current families */
    new_students = 1 + rng_below(&g->rng, 2);
    kind = PAY_DISCOUNT;
    rebuy_in_12 = 3;
  } else if (phase >= 1 && phase <= 3) { /* ... that goes on selling until the last weeks */
    new_students = rng_chance(&g->rng, 1, 2);
    kind = PAY_DISCOUNT;
  } else if (in->problem == TW_GEN_COLLECTION_SURGE && d >= in->problem_day &&
             d < in->problem_day + 6) {
    rebuy_in_12 = 3; /* current students buy again; no new students, lessons as before */
  } else if (in->problem == TW_GEN_SEASONAL_SURGE && d >= in->problem_day &&
             d < in->problem_day + 4) {
    new_students = 4 + rng_below(&g->rng, 4); /* new students at full price, who then attend */
  }
  for (uint32_t k = 0; k < new_students; k++)
    if (enroll(g, i, (int)kind) < 0) return -1;
  if (rebuy_in_12 == 0) return 0;
  for (uint16_t k = 0; k < in->n_slots; k++) {
    gen_student_t *s = &in->students[k];
    if (s->state != SLOT_ACTIVE || s->pay_after_class || s->enrolled_day >= d ||
        !rng_chance(&g->rng, rebuy_in_12, 12))
      continue;
    size_t before = g->day_len;
    if (pay(g, i, s, rand_time(g, 9 * 60, 15 * 60), (int)kind) < 0) return -1;
    if (in->problem == TW_GEN_COLLECTION_SURGE) note_problem(in, &g->day[before]);
  }
  return 0;
}

/* One institution's day. Returns 0, or -1 on out of memory. */
static int inst_day(gen_t *g, uint32_t i, int weekday) {
  gen_inst_t *in = &g->inst[i];
  int32_t d = g->d;
  int phase = runaway_phase(g, in);
  if (in->closed) {
    /* after a run-away or a closure with fees owed: a few parents complain, one a day for up to
     * three days; a planned closure leaves nobody to complain */
    if (in->problem != TW_GEN_PLANNED_CLOSURE && d <= in->close_day + 3 &&
        rng_chance(&g->rng, 2, 3))
      return complaint(g, i, kStormComplaints, N_STORM, rand_time(g, 8 * 60, 22 * 60));
    return 0;
  }
  int stopped = active(g, in, TW_GEN_CLASSES_STOP);
  if (stopped && d == in->problem_day && in->first_ts_ms < 0) {
    in->first_ts_ms = g->day_start_ms; /* an absence: the problem starts at local midnight */
    in->first_frac = 0;
  }
  int closing = (in->problem == TW_GEN_CLOSURE_WITH_BALANCE || in->problem == TW_GEN_RUNAWAY ||
                 in->problem == TW_GEN_PLANNED_CLOSURE) &&
                d == in->close_day;

  for (uint16_t k = 0; k < in->n_slots; k++) {
    gen_student_t *s = &in->students[k];
    if (s->state != SLOT_LEAVING || s->refund_day != d) continue;
    gen_event_t *e = emit(g, i, TW_GEN_REFUND, rand_time(g, 10 * 60, 17 * 60));
    if (e == NULL) return -1;
    e->student = s->serial;
    e->ref = s->refund_serial;
    e->amount_fen = s->refund_amount_fen;
    e->action = RF_PAID;
    in->balance_fen -= s->refund_amount_fen;
    s->refund_day = NO_DAY;
    s->state = SLOT_FREE;
  }

  if (in->problem == TW_GEN_COMPLAINT_STORM && d >= in->problem_day &&
      d < in->problem_day + in->storm_days) {
    int32_t n = in->storm_count, span = in->storm_days;
    for (int32_t k = 0; k < n; k++)
      if (in->problem_day + k * span / n == d &&
          complaint(g, i, kStormComplaints, N_STORM, rand_time(g, 8 * 60, 22 * 60)) < 0)
        return -1;
    if (d == in->problem_day + 1 && staff_event(g, i, ST_WAGE_ARREARS, in->next_staff) == NULL)
      return -1;
  }

  if (d == in->problem_day) { /* the first sale of a sales scenario is a new student's */
    static const int kFirstSale[TW_GEN_PROBLEM_COUNT] = {[TW_GEN_OVER_CAP] = PAY_OVER_AMOUNT,
                                                         [TW_GEN_UNSUPERVISED] = PAY_UNSUPERVISED,
                                                         [TW_GEN_SPLIT_ORDERS] = PAY_SPLIT,
                                                         [TW_GEN_TRAINING_LOAN] = PAY_LOAN,
                                                         [TW_GEN_DEEP_DISCOUNT] = PAY_DISCOUNT};
    if (kFirstSale[in->problem] != PAY_NORMAL && enroll(g, i, kFirstSale[in->problem]) < 0)
      return -1;
    if (in->problem == TW_GEN_ESCROW_DRAIN && in->escrow_fen > 0) {
      gen_event_t *e =
          escrow(g, i, ES_WITHDRAW, in->escrow_fen * (45 + rng_below(&g->rng, 16)) / 100,
                 rand_time(g, 10 * 60, 16 * 60));
      if (e == NULL) return -1;
      note_problem(in, e);
    }
    if (in->problem == TW_GEN_UNCHECKED_TEACHER && hire(g, i, 1) < 0) return -1;
    if (in->problem == TW_GEN_PLANNED_CLOSURE) {
      gen_event_t *e = institution_event(g, i, IN_CLOSURE_NOTICE, rand_time(g, 9 * 60, 11 * 60));
      if (e == NULL) return -1;
      note_problem(in, e);
    }
  }
  if (in->problem == TW_GEN_ESCROW_DRAIN && d == in->problem_day + 2 && in->escrow_fen > 0 &&
      escrow(g, i, ES_WITHDRAW, in->escrow_fen / 4, rand_time(g, 10 * 60, 16 * 60)) == NULL)
    return -1;
  /* Branch closures: one at the onset, then a 1-in-6 chance a day for 20 days; the second one is
   * forced on the last of those days (or of the run) if chance has not brought it, so the
   * scenario always shows its pattern (two closures within 30 days). */
  int32_t last_close_day = in->problem_day + 20;
  if (last_close_day > (int32_t)g->opts->days - 1) last_close_day = (int32_t)g->opts->days - 1;
  if (in->problem == TW_GEN_BRANCH_CLOSURES && in->branches_closed < in->n_branches &&
      (d == in->problem_day ||
       (d > in->problem_day && d <= in->problem_day + 20 &&
        (rng_chance(&g->rng, 1, 6) || (d == last_close_day && in->branches_closed < 2)))) &&
      institution_event(g, i, IN_BRANCH_CLOSE, rand_time(g, 17 * 60, 21 * 60)) == NULL)
    return -1;
  if (in->problem == TW_GEN_STAFF_EXODUS && d == in->problem_day) /* 70% of today's teachers */
    in->exodus_left = (int32_t)(in->staff * 7 + 9) / 10;
  if (active(g, in, TW_GEN_STAFF_EXODUS) && in->exodus_left > 0 &&
      (d == in->problem_day || rng_chance(&g->rng, 1, 3))) {
    in->exodus_left--;
    if (staff_leaves(g, i) < 0) return -1;
  }
  if (phase == 2 && (d - in->problem_day) % RUNAWAY_PHASE_DAYS == 0) { /* wages stop */
    for (uint32_t k = 0; k < 2; k++)
      if (staff_event(g, i, ST_WAGE_ARREARS, in->left_staff + 1 + k) == NULL) return -1;
  }
  if (phase == 2 && rng_chance(&g->rng, 1, 3) && staff_leaves(g, i) < 0) return -1;
  if (phase >= 4) { /* the complaint storm */
    uint32_t n = 1 + rng_below(&g->rng, 2);
    for (uint32_t k = 0; k < n; k++)
      if (complaint(g, i, kStormComplaints, N_STORM, rand_time(g, 8 * 60, 22 * 60)) < 0) return -1;
  }

  if (surges(g, i) < 0) return -1;

  if (closing) { /* doors locked: no lessons today */
    int action = in->problem == TW_GEN_CLOSURE_WITH_BALANCE && rng_chance(&g->rng, 3, 10)
                     ? IN_SUSPEND
                     : IN_CLOSE;
    gen_event_t *e = institution_event(g, i, action, rand_time(g, 18 * 60, 20 * 60));
    if (e == NULL) return -1;
    if (in->problem != TW_GEN_PLANNED_CLOSURE) {
      in->collapse_ts_ms = e->ts_ms;
      in->collapse_frac = e->frac;
    }
    in->closed = 1;
    return 0;
  }

  /* no ordinary sign-ups once classes stop, a run-away is under way, a closure is announced or
   * a renewal push (COLLECTION_SURGE) sells to the current students instead */
  int selling = !stopped && phase < 1 && !active(g, in, TW_GEN_PLANNED_CLOSURE) &&
                !active(g, in, TW_GEN_COLLECTION_SURGE);
  uint16_t cap = in->target_students, present = 0;
  uint32_t enrol_in_40 = 4;                /* about one new student in 10 days while below target */
  if (is_season(g->opts->start_day + d)) { /* enrolment seasons: more room, more sign-ups */
    cap = (uint16_t)(cap + cap / 5);
    enrol_in_40 = 10;
  }
  if (cap > in->n_slots) cap = in->n_slots;
  for (uint16_t k = 0; k < in->n_slots; k++) present += in->students[k].state != SLOT_FREE;
  if (selling && present < cap && rng_chance(&g->rng, enrol_in_40, 40) &&
      enroll(g, i, PAY_NORMAL) < 0)
    return -1;

  /* Lessons: one week in 8 missed; a run-away thins them out phase by phase. */
  static const uint32_t kSkipIn16[6] = {2, 8, 12, 14, 15, 15};
  uint32_t skip_in_16 = phase >= 0 ? kSkipIn16[phase] : 2;
  for (uint16_t k = 0; k < in->n_slots && !stopped; k++) {
    gen_student_t *s = &in->students[k];
    if (s->state != SLOT_ACTIVE || s->weekday != weekday || s->enrolled_day >= d) continue;
    if (rng_chance(&g->rng, skip_in_16, 16)) continue; /* absent this week (ill, holiday) */
    if (lesson(g, i, s) < 0) return -1;
  }

  if (weekday == in->settle_weekday && in->pending_release_fen > 0) {
    int64_t amount = in->pending_release_fen;
    int ahead = active(g, in, TW_GEN_RELEASE_AHEAD);
    if (ahead) amount *= 3; /* released ahead of the lessons delivered */
    if (amount > in->escrow_fen) amount = in->escrow_fen > 0 ? in->escrow_fen : 0;
    if (amount > 0) {
      /* settled in the evening, after the day's lessons (which end by 20:30) */
      gen_event_t *e = escrow(g, i, ES_RELEASE, amount, rand_time(g, 21 * 60, 22 * 60));
      if (e == NULL) return -1;
      if (ahead) note_problem(in, e);
    }
    in->pending_release_fen = 0;
  }

  /* Mild complaints: at most one every 3 days, about one a month; none around a complaint
   * scenario's own signal, so each scenario shows its kind alone. */
  int quiet = in->problem == TW_GEN_COMPLAINT_STORM || in->problem == TW_GEN_CLOSURE_WITH_BALANCE ||
                      in->problem == TW_GEN_RUNAWAY
                  ? d >= in->problem_day - 7
                  : 0;
  if (!quiet && d - in->last_complaint_day >= 3 && rng_chance(&g->rng, 1, 45) &&
      complaint(g, i, kMildComplaints, N_MILD, rand_time(g, 9 * 60, 22 * 60)) < 0)
    return -1;

  /* Staff turnover: a hire every 150 days or so (each checked on the platform), a leave every
   * 240 days or so. */
  if (rng_chance(&g->rng, 1, 150)) {
    if (hire(g, i, 0) < 0) return -1;
  } else if (in->staff > (in->problem == TW_GEN_STAFF_EXODUS ? 6u : 2u) &&
             rng_chance(&g->rng, 1, 240)) { /* an exodus keeps its 6 teachers until it starts */
    if (staff_leaves(g, i) < 0) return -1;
  }
  if (in->problem != TW_GEN_BRANCH_CLOSURES && in->branches_closed < in->n_branches &&
      rng_chance(&g->rng, 1, 4000) &&
      institution_event(g, i, IN_BRANCH_CLOSE, rand_time(g, 17 * 60, 21 * 60)) == NULL)
    return -1;
  if (rng_chance(&g->rng, 1, 5000)) {
    gen_event_t *e = emit(g, i, TW_GEN_INSTITUTION, rand_time(g, 9 * 60, 17 * 60));
    if (e == NULL) return -1;
    e->action = IN_RELOCATE;
  }
  return 0;
}

/* ---- Setup ---- */

/* same_city_region: another district of the same city (the first four digits) when the table has
 * one, else the same district. */
static uint16_t same_city_region(gen_t *g, uint16_t region) {
  const char *code = tw_gen_region_at(region)->code;
  size_t n = tw_gen_region_count(), same = 0;
  for (size_t r = 0; r < n; r++) same += memcmp(tw_gen_region_at(r)->code, code, 4) == 0;
  size_t pick = rng_below(&g->rng, (uint32_t)same);
  for (size_t r = 0; r < n; r++)
    if (memcmp(tw_gen_region_at(r)->code, code, 4) == 0 && pick-- == 0) return (uint16_t)r;
  return region;
}

/* setup_institutions: regions, courses, sizes, problems and credit codes. Returns the number of
 * student slots the institutions need. */
static size_t setup_institutions(gen_t *g, uint32_t *order) {
  uint32_t n = g->opts->institutions;
  int32_t days = (int32_t)g->opts->days;
  size_t n_regions = tw_gen_region_count();
  size_t first44 = 0, n44 = 0;
  for (size_t r = 0; r < n_regions; r++) {
    if (memcmp(tw_gen_region_at(r)->code, "44", 2) != 0) continue;
    if (n44++ == 0) first44 = r;
  }
  size_t slots = 0;
  for (uint32_t i = 0; i < n; i++) {
    gen_inst_t *in = &g->inst[i];
    memset(in, 0, sizeof *in);
    in->problem = -1;
    in->first_ts_ms = -1;
    in->problem_day = in->close_day = NO_DAY;
    in->collapse_ts_ms = -1;
    in->last_complaint_day = -1000;
    if (rng_chance(&g->rng, 1, 5)) {
      in->region = (uint16_t)(first44 + rng_below(&g->rng, (uint32_t)n44));
    } else {
      uint32_t r = rng_below(&g->rng, (uint32_t)(n_regions - n44));
      in->region = (uint16_t)(r < first44 ? r : r + n44);
    }
    in->n_courses = (uint8_t)(1 + rng_below(&g->rng, MAX_COURSES));
    for (uint8_t c = 0; c < in->n_courses; c++) {
      const gen_course_t *course;
      in->course[c] = (uint8_t)rng_below(&g->rng, N_COURSES);
      course = &kCourses[in->course[c]];
      uint32_t steps = (uint32_t)(course->max_price_fen - course->min_price_fen) / 500 + 1;
      in->price_fen[c] = course->min_price_fen + 500 * (int32_t)rng_below(&g->rng, steps);
    }
    in->target_students = (uint16_t)(10 + rng_below(&g->rng, 71));
    in->settle_weekday = (uint8_t)rng_below(&g->rng, 5);
    in->staff = 2 + rng_below(&g->rng, 8);
    in->next_staff = in->staff;
    if (rng_chance(&g->rng, 1, 4)) { /* a multi-branch institution: branches in its city */
      in->n_branches = (uint8_t)(1 + rng_below(&g->rng, MAX_BRANCHES));
      for (uint8_t b = 0; b < in->n_branches; b++)
        in->branch_region[b] = same_city_region(g, in->region);
    }
    order[i] = i;
  }
  /* Scenario institutions: about 2%, at least one of each kind, chosen by the seed. */
  uint32_t p = (n + 25) / 50;
  if (p < TW_GEN_PROBLEM_COUNT) p = TW_GEN_PROBLEM_COUNT;
  if (p > n) p = n;
  for (uint32_t k = 0; k < p; k++) { /* partial Fisher-Yates */
    uint32_t j = k + rng_below(&g->rng, n - k);
    uint32_t t = order[k];
    order[k] = order[j];
    order[j] = t;
  }
  for (uint32_t k = 0; k < p; k++) {
    gen_inst_t *in = &g->inst[order[k]];
    in->problem = (int8_t)(k % TW_GEN_PROBLEM_COUNT);
    in->problem_day = days / 3 + (int32_t)rng_below(&g->rng, (uint32_t)(days / 3 + 1));
    if (in->problem == TW_GEN_RUNAWAY && days >= 80) /* room for the timeline to end */
      in->problem_day = days / 4 + (int32_t)rng_below(&g->rng, (uint32_t)(days - 40 - days / 4));
    if (in->problem_day > days - 1) in->problem_day = days - 1;
    if (k % 5 == 0 && memcmp(tw_gen_region_at(in->region)->code, "44", 2) != 0)
      in->region = (uint16_t)(first44 + rng_below(&g->rng, (uint32_t)n44));
    switch (in->problem) {
      case TW_GEN_COMPLAINT_STORM:
        in->storm_days = days - in->problem_day < 5 ? days - in->problem_day : 5;
        in->storm_count = 6 + (int32_t)rng_below(&g->rng, 4);
        break;
      case TW_GEN_CLOSURE_WITH_BALANCE:
        in->close_day = in->problem_day + 2 + (int32_t)rng_below(&g->rng, 4);
        if (in->close_day > days - 1) in->close_day = days - 1;
        break;
      case TW_GEN_RUNAWAY: /* five phases of a week, then the doors close within 4 days */
        in->close_day = in->problem_day + 5 * RUNAWAY_PHASE_DAYS + (int32_t)rng_below(&g->rng, 4);
        break;
      case TW_GEN_PLANNED_CLOSURE: /* 30 days' public notice */
        in->close_day = in->problem_day + 30;
        break;
      case TW_GEN_STAFF_EXODUS: /* at least 6 teachers, 70% of them leave */
        if (in->staff < 6) in->staff = in->next_staff = 6;
        in->exodus_left = (int32_t)(in->staff * 7 + 9) / 10;
        break;
      case TW_GEN_BRANCH_CLOSURES:
        in->n_branches = MAX_BRANCHES;
        for (uint8_t b = 0; b < in->n_branches; b++)
          in->branch_region[b] = same_city_region(g, in->region);
        break;
      default:
        break;
    }
  }
  /* Credit codes: "52" + region + 9-character organisation code (3 random characters and the
   * index in base 31, so codes are unique) + the GB 32100-2015 check character. */
  for (uint32_t i = 0; i < n; i++) {
    gen_inst_t *in = &g->inst[i];
    memcpy(in->id, "52", 2);
    memcpy(in->id + 2, tw_gen_region_at(in->region)->code, 6);
    for (int c = 0; c < 3; c++) in->id[8 + c] = kCodeAlphabet[rng_below(&g->rng, 31)];
    uint32_t v = i;
    for (int c = 16; c >= 11; c--) {
      in->id[c] = kCodeAlphabet[v % 31];
      v /= 31;
    }
    in->id[17] = tw_credit_code_check_char(in->id);
    in->id[18] = '\0';
    int surge = in->problem == TW_GEN_CLOSURE_WITH_BALANCE || in->problem == TW_GEN_RUNAWAY ||
                in->problem == TW_GEN_SEASONAL_SURGE;
    /* room for the seasons (a fifth more students) and for a scenario's new students */
    in->n_slots = (uint16_t)(in->target_students + in->target_students / 5 +
                             (surge ? EXTRA_SLOTS_SURGE : EXTRA_SLOTS));
    slots += in->n_slots;
  }
  return slots;
}

/* setup_students: hand out the slots; students already there on day 0 renew before their first
 * lesson of the period (so their prepaid fees are in the stream too). */
static void setup_students(gen_t *g) {
  gen_student_t *next_slots = g->students;
  for (uint32_t i = 0; i < g->opts->institutions; i++) {
    gen_inst_t *in = &g->inst[i];
    in->students = next_slots;
    next_slots += in->n_slots;
    uint16_t initial = (uint16_t)(in->target_students * (40 + rng_below(&g->rng, 31)) / 100);
    for (uint16_t k = 0; k < initial; k++) {
      setup_student(g, in, &in->students[k], 1);
      in->students[k].enrolled_day = -1;
    }
  }
}

/* ---- Output ---- */

typedef struct gen_kv {
  const char *key;
  const char *str; /* NULL for an integer */
  size_t len;
  int64_t num;
} gen_kv_t;

typedef struct gen_line {
  char buf[2048];
  size_t len;
} gen_line_t;

static void put(gen_line_t *l, const char *s, size_t n) {
  if (n > sizeof l->buf - l->len) n = sizeof l->buf - l->len;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void put_json_str(gen_line_t *l, const char *s, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  put(l, "\"", 1);
  for (size_t k = 0; k < n; k++) {
    unsigned char c = (unsigned char)s[k];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      put(l, esc, 2);
    } else if (c < 0x20) {
      char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
      put(l, esc, 6);
    } else {
      put(l, (const char *)&s[k], 1);
    }
  }
  put(l, "\"", 1);
}

static size_t fmt_u64(char *out, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t k = 0; k < n; k++) out[k] = tmp[n - 1 - k];
  return n;
}

static void put_i64(gen_line_t *l, int64_t v) {
  char tmp[24];
  size_t n = 0;
  if (v < 0) {
    tmp[n++] = '-';
    n += fmt_u64(tmp + n, (uint64_t)0 - (uint64_t)v);
  } else {
    n = fmt_u64(tmp, (uint64_t)v);
  }
  put(l, tmp, n);
}

/* RFC 3339 local time with +08:00, milliseconds only when frac. Writes 25 or 29 bytes. */
static size_t fmt_ts(char *out, int64_t ts_ms, int frac) {
  int64_t local = ts_ms + TZ_OFFSET_MS;
  int64_t day = local >= 0 ? local / MS_PER_DAY : -((-local + MS_PER_DAY - 1) / MS_PER_DAY);
  int64_t ms = local - day * MS_PER_DAY;
  int64_t y;
  unsigned m, d;
  tw_civil_from_days(day, &y, &m, &d);
  unsigned hh = (unsigned)(ms / MS_PER_HOUR), mi = (unsigned)(ms / MS_PER_MIN % 60);
  unsigned ss = (unsigned)(ms / 1000 % 60), mss = (unsigned)(ms % 1000);
  char *p = out;
  unsigned yy = (unsigned)y;
  *p++ = (char)('0' + yy / 1000 % 10);
  *p++ = (char)('0' + yy / 100 % 10);
  *p++ = (char)('0' + yy / 10 % 10);
  *p++ = (char)('0' + yy % 10);
  *p++ = '-';
  *p++ = (char)('0' + m / 10);
  *p++ = (char)('0' + m % 10);
  *p++ = '-';
  *p++ = (char)('0' + d / 10);
  *p++ = (char)('0' + d % 10);
  *p++ = 'T';
  *p++ = (char)('0' + hh / 10);
  *p++ = (char)('0' + hh % 10);
  *p++ = ':';
  *p++ = (char)('0' + mi / 10);
  *p++ = (char)('0' + mi % 10);
  *p++ = ':';
  *p++ = (char)('0' + ss / 10);
  *p++ = (char)('0' + ss % 10);
  if (frac) {
    *p++ = '.';
    *p++ = (char)('0' + mss / 100);
    *p++ = (char)('0' + mss / 10 % 10);
    *p++ = (char)('0' + mss % 10);
  }
  memcpy(p, "+08:00", 6);
  p += 6;
  return (size_t)(p - out);
}

/* Scratch strings of one event: ids and the timestamp. */
typedef struct gen_scratch {
  char event_id[64], ts[32], student[32], ref[48], course[8], staff[48];
  char text[512]; /* a complaint's prefix + text + suffix */
} gen_scratch_t;

static size_t prefixed_id(char *out, char prefix, uint64_t a, uint64_t b) {
  size_t n = 0;
  out[n++] = prefix;
  n += fmt_u64(out + n, a);
  out[n++] = '-';
  n += fmt_u64(out + n, b);
  out[n] = '\0';
  return n;
}

#define KV_STR(k, s, n) \
  (gen_kv_t) {          \
    (k), (s), (n), 0    \
  }
#define KV_CSTR(k, s)      \
  (gen_kv_t) {             \
    (k), (s), strlen(s), 0 \
  }
#define KV_INT(k, v)  \
  (gen_kv_t) {        \
    (k), NULL, 0, (v) \
  }

/* fields: the keys and values of event e, in output order. Returns how many (<= 14). */
static size_t fields(const gen_t *g, const gen_event_t *e, gen_scratch_t *sc, gen_kv_t *kv) {
  const gen_inst_t *in = &g->inst[e->inst];
  size_t n = 0;
  size_t id_len = prefixed_id(sc->event_id, 'g', g->opts->seed, g->written);
  size_t ts_len = fmt_ts(sc->ts, e->ts_ms, e->frac);
  /* Student numbers are unique across institutions: (index + 1) × 100000 + serial. */
  size_t st_len = 0;
  sc->student[st_len++] = 'S';
  st_len += fmt_u64(sc->student + st_len, ((uint64_t)e->inst + 1) * 100000u + e->student);
  const gen_course_t *course = &kCourses[g->inst[e->inst].course[e->course]];
  size_t co_len = 0;
  memcpy(sc->course, "C-", 2);
  co_len = 2 + fmt_u64(sc->course + 2, (uint64_t)g->inst[e->inst].course[e->course] + 101);
  kv[n++] = KV_STR("event_id", sc->event_id, id_len);
  kv[n++] = KV_CSTR("type", kTypeNames[e->type]);
  kv[n++] = KV_STR("ts", sc->ts, ts_len);
  kv[n++] = KV_STR("institution_id", in->id, TW_CREDIT_CODE_LEN);
  kv[n++] = KV_STR("region", tw_gen_region_at(in->region)->code, TW_REGION_LEN);
  switch (e->type) {
    case TW_GEN_PAYMENT:
      kv[n++] = KV_STR("student_id", sc->student, st_len);
      kv[n++] = KV_STR("course_id", sc->course, co_len);
      kv[n++] = KV_INT("amount_fen", e->amount_fen);
      kv[n++] = KV_INT("class_hours", e->class_hours);
      kv[n++] = KV_INT("service_days", e->service_days);
      kv[n++] = KV_CSTR("channel", kChannels[e->action]);
      kv[n++] = KV_INT("list_price_fen", e->list_price_fen);
      break;
    case TW_GEN_REFUND:
      kv[n++] = KV_STR("request_id", sc->ref, prefixed_id(sc->ref, 'R', e->inst, e->ref));
      kv[n++] = KV_STR("student_id", sc->student, st_len);
      kv[n++] = KV_INT("amount_fen", e->amount_fen);
      kv[n++] = KV_CSTR("status", kRefundStatus[e->action]);
      break;
    case TW_GEN_CONSUMPTION:
      kv[n++] = KV_STR("student_id", sc->student, st_len);
      kv[n++] = KV_STR("course_id", sc->course, co_len);
      kv[n++] = KV_INT("amount_fen", e->amount_fen);
      kv[n++] = KV_INT("class_hours", e->class_hours);
      kv[n++] = KV_CSTR("confirmed_by", kConfirmedBy[e->confirmed_by]);
      kv[n++] = KV_STR("staff_id", sc->staff, prefixed_id(sc->staff, 'T', e->inst, e->ref));
      break;
    case TW_GEN_ENROLLMENT:
      kv[n++] = KV_STR("student_id", sc->student, st_len);
      kv[n++] = KV_STR("course_id", sc->course, co_len);
      kv[n++] = KV_CSTR("action", kEnrollActions[e->action]);
      kv[n++] = KV_CSTR("course_title", course->title);
      kv[n++] = KV_CSTR("course_category", course->category);
      break;
    case TW_GEN_COMPLAINT: {
      const gen_text_t *t = e->action ? &kStormComplaints[e->text] : &kMildComplaints[e->text];
      kv[n++] = KV_STR("complaint_id", sc->ref, prefixed_id(sc->ref, 'K', e->inst, e->ref));
      kv[n++] = KV_CSTR("category", t->category);
      size_t len = 0; /* the three parts are static and together far below the buffer */
      const char *parts[3] = {kComplaintPrefixes[e->prefix], t->text,
                              kComplaintSuffixes[e->suffix]};
      for (int k = 0; k < 3; k++) {
        size_t part = strlen(parts[k]);
        if (part > sizeof sc->text - len) part = sizeof sc->text - len;
        memcpy(sc->text + len, parts[k], part);
        len += part;
      }
      kv[n++] = KV_STR("text", sc->text, len);
      break;
    }
    case TW_GEN_INSTITUTION:
      kv[n++] = KV_CSTR("action", kInstActions[e->action]);
      if (e->action == IN_BRANCH_CLOSE) {
        kv[n++] = KV_STR("branch_id", sc->ref, prefixed_id(sc->ref, 'B', e->inst, e->ref));
        kv[n++] = KV_STR("branch_region", tw_gen_region_at(e->text)->code, TW_REGION_LEN);
      }
      break;
    case TW_GEN_ESCROW:
      kv[n++] = KV_CSTR("action", kEscrowActions[e->action]);
      kv[n++] = KV_INT("amount_fen", e->amount_fen);
      kv[n++] = KV_INT("balance_fen", e->balance_fen);
      break;
    default: /* TW_GEN_STAFF */
      kv[n++] = KV_STR("staff_id", sc->ref, prefixed_id(sc->ref, 'T', e->inst, e->ref));
      kv[n++] = KV_CSTR("action", kStaffActions[e->action]);
      break;
  }
  return n;
}

static int write_event(gen_t *g, const gen_event_t *e, FILE *out) {
  gen_scratch_t sc;
  gen_kv_t kv[14];
  size_t n = fields(g, e, &sc, kv);
  if (g->opts->format == TW_GEN_MSGPACK) {
    msgpack_sbuffer_clear(&g->sbuf);
    int bad = msgpack_pack_map(&g->pk, n);
    for (size_t k = 0; k < n; k++) {
      size_t klen = strlen(kv[k].key);
      bad |= msgpack_pack_str(&g->pk, klen);
      bad |= msgpack_pack_str_body(&g->pk, kv[k].key, klen);
      if (kv[k].str != NULL) {
        bad |= msgpack_pack_str(&g->pk, kv[k].len);
        bad |= msgpack_pack_str_body(&g->pk, kv[k].str, kv[k].len);
      } else {
        bad |= msgpack_pack_int64(&g->pk, kv[k].num);
      }
    }
    if (bad != 0) return TW_ENOMEM; /* the sbuffer could not grow */
    if (fwrite(g->sbuf.data, 1, g->sbuf.size, out) != g->sbuf.size) return TW_EIO;
  } else {
    gen_line_t line;
    line.len = 0;
    put(&line, "{", 1);
    for (size_t k = 0; k < n; k++) {
      if (k) put(&line, ",", 1);
      put_json_str(&line, kv[k].key, strlen(kv[k].key));
      put(&line, ":", 1);
      if (kv[k].str != NULL)
        put_json_str(&line, kv[k].str, kv[k].len);
      else
        put_i64(&line, kv[k].num);
    }
    put(&line, "}\n", 2);
    if (line.len == sizeof line.buf) return TW_ETOOBIG; /* cannot happen with static tables */
    if (fwrite(line.buf, 1, line.len, out) != line.len) return TW_EIO;
  }
  g->written++;
  g->stats.events++;
  g->stats.by_type[e->type]++;
  return 0;
}

static int cmp_event(const void *a, const void *b) {
  const gen_event_t *x = a, *y = b;
  if (x->ts_ms != y->ts_ms) return x->ts_ms < y->ts_ms ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int write_truth(const gen_t *g, FILE *truth, tw_gen_stats_t *stats) {
  for (uint32_t i = 0; i < g->opts->institutions; i++) {
    const gen_inst_t *in = &g->inst[i];
    if (in->problem < 0 || in->first_ts_ms < 0) continue;
    stats->problems[in->problem]++;
    if (truth == NULL) continue;
    char onset[32], collapse[40] = "null";
    size_t onset_len = fmt_ts(onset, in->first_ts_ms, in->first_frac);
    if (in->collapse_ts_ms >= 0) {
      collapse[0] = '"';
      size_t len = fmt_ts(collapse + 1, in->collapse_ts_ms, in->collapse_frac);
      collapse[len + 1] = '"';
      collapse[len + 2] = '\0';
    }
    if (fprintf(truth,
                "{\"institution_id\":\"%s\",\"region\":\"%s\",\"scenario\":\"%s\","
                "\"family\":\"%s\",\"onset\":\"%.*s\",\"collapse\":%s}\n",
                in->id, tw_gen_region_at(in->region)->code, kProblemNames[in->problem],
                kProblemFamilies[in->problem], (int)onset_len, onset, collapse) < 0)
      return TW_EIO;
  }
  return 0;
}

int tw_gen_run(const tw_gen_opts_t *opts, FILE *out, FILE *truth, tw_gen_stats_t *stats) {
  gen_t g;
  uint32_t *order = NULL;
  int rc = 0;
  memset(&g, 0, sizeof g);
  msgpack_sbuffer_init(&g.sbuf);
  msgpack_packer_init(&g.pk, &g.sbuf, msgpack_sbuffer_write);
  if (opts == NULL || out == NULL || opts->institutions < 1 ||
      opts->institutions > TW_GEN_MAX_INSTITUTIONS || opts->days < 1 ||
      opts->days > TW_GEN_MAX_DAYS ||
      (opts->format != TW_GEN_JSONL && opts->format != TW_GEN_MSGPACK) || opts->start_day < 0 ||
      opts->start_day > 2932896 /* 9999-12-31 */) {
    rc = TW_EINVAL;
    goto fail;
  }
  g.opts = opts;
  rng_seed(&g.rng, opts->seed);
  g.inst = calloc(opts->institutions, sizeof *g.inst);
  order = calloc(opts->institutions, sizeof *order);
  if (g.inst == NULL || order == NULL) {
    rc = TW_ENOMEM;
    goto fail;
  }
  g.students = calloc(setup_institutions(&g, order), sizeof *g.students);
  if (g.students == NULL) {
    rc = TW_ENOMEM;
    goto fail;
  }
  setup_students(&g);

  for (uint32_t d = 0; d < opts->days; d++) {
    int64_t day = opts->start_day + d;
    int weekday = (int)(((day + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    g.d = (int32_t)d;
    g.day_start_ms = day * MS_PER_DAY - TZ_OFFSET_MS;
    g.day_len = 0;
    for (uint32_t i = 0; i < opts->institutions; i++) {
      if (inst_day(&g, i, weekday) < 0) {
        rc = TW_ENOMEM;
        goto fail;
      }
    }
    qsort(g.day, g.day_len, sizeof *g.day, cmp_event);
    for (size_t k = 0; k < g.day_len; k++)
      if ((rc = write_event(&g, &g.day[k], out)) < 0) goto fail;
  }
  rc = write_truth(&g, truth, &g.stats);
  if (rc == 0 && (ferror(out) || (truth != NULL && ferror(truth)))) rc = TW_EIO;
fail:
  if (stats != NULL) *stats = g.stats;
  msgpack_sbuffer_destroy(&g.sbuf);
  free(g.day);
  free(g.students);
  free(g.inst);
  free(order);
  return rc;
}
