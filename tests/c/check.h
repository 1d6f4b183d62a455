/* A few assertion macros for etcdc's C tests (which also compile as C++). */
#ifndef ETCDC_TEST_CHECK_H
#define ETCDC_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <etcdc.h>

static int check_failures = 0;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      check_failures++;                                                 \
    }                                                                   \
  } while (0)

/* Expects `call` to return `want`, and a non-empty message when it is an error. */
#define EXPECT(call, want)                                                             \
  do {                                                                                 \
    etcdc_status got_ = (call);                                                        \
    if (got_ != (want)) {                                                              \
      fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__, #call, \
              etcdc_status_str(got_), etcdc_status_str(want), etcdc_last_error());     \
      check_failures++;                                                                \
    } else if ((want) != ETCDC_OK && etcdc_last_error()[0] == '\0') {                  \
      fprintf(stderr, "%s:%d: %s gave no message\n", __FILE__, __LINE__, #call);       \
      check_failures++;                                                                \
    }                                                                                  \
  } while (0)

#define OK(call) EXPECT(call, ETCDC_OK)

/* The last error must mention `text`. */
#define EXPECT_MESSAGE(text)                                                            \
  do {                                                                                  \
    if (!strstr(etcdc_last_error(), (text))) {                                          \
      fprintf(stderr, "%s:%d: last error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,    \
              etcdc_last_error(), (text));                                              \
      check_failures++;                                                                 \
    }                                                                                   \
  } while (0)

#define S(str) (const uint8_t *)(str), strlen(str)

static inline const char *endpoints_from_env(void) {
  const char *e = getenv("ETCDC_ENDPOINTS");
  if (!e || !*e) {
    fprintf(stderr, "ETCDC_ENDPOINTS is not set: run through scripts/with-etcd.sh\n");
    exit(2);
  }
  return e;
}

static int check_report(const char *name) {
  if (check_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

#endif
