/* woq.h is valid C99: this file is compiled with -std=c99 -Wpedantic -Werror
 * and linked against libwoq.so. It also checks a few calls from C. */
#include <stdio.h>
#include <string.h>
#include <woq.h>

static int failures = 0;
#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                    \
    }                                                                \
  } while (0)

int main(void) {
  woq_context_options opts;
  woq_context* ctx = NULL;
  woq_quant_options q;
  woq_qmatrix* qm = NULL;
  woq_tensor* t = NULL;
  float w[4 * 32], x[32], y[4];
  int i;
  CHECK(woq_version() / 10000 == WOQ_VERSION_MAJOR);
  CHECK(strcmp(woq_status_string(WOQ_ERR_SHAPE), "WOQ_ERR_SHAPE") == 0);
  CHECK(woq_context_options_init(&opts) == WOQ_OK);
  opts.backend = WOQ_BACKEND_CPU_REFERENCE;
  CHECK(woq_context_create(&opts, &ctx) == WOQ_OK);
  for (i = 0; i < 4 * 32; ++i) w[i] = (float)((i * 7) % 13) - 6.0f;
  for (i = 0; i < 32; ++i) x[i] = 1.0f;
  CHECK(woq_quant_options_init(&q) == WOQ_OK);
  q.bits = 8;
  q.group_size = 32;
  CHECK(woq_quantize(w, WOQ_DTYPE_F32, 4, 32, &q, &qm) == WOQ_OK);
  CHECK(woq_tensor_from_qmatrix(ctx, qm, NULL, &t) == WOQ_OK);
  CHECK(woq_matmul(ctx, t, x, WOQ_DTYPE_F32, 1, y, WOQ_DTYPE_F32) == WOQ_OK);
  /* Integers in [-6, 6] with an 8-bit grid: row sums are close to exact. */
  for (i = 0; i < 4; ++i) {
    float expect = 0.0f;
    int k;
    for (k = 0; k < 32; ++k) expect += w[i * 32 + k];
    CHECK(y[i] > expect - 0.5f && y[i] < expect + 0.5f);
  }
  CHECK(woq_matmul(ctx, t, x, WOQ_DTYPE_F32, 0, y, WOQ_DTYPE_F32) == WOQ_ERR_SHAPE);
  CHECK(strlen(woq_last_error()) > 0);
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(qm);
  woq_context_destroy(ctx);
  printf("C header test: %d failure(s)\n", failures);
  return failures ? 1 : 0;
}
