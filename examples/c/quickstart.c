/* Quick start in plain C: quantize random weights to 4 bits, write a .woq
 * file, load it back, run woq_matmul and compare with an fp32 matmul.
 *
 *   woq_example_c [OUT.woq]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <woq.h>

#define N 256 /* outputs */
#define K 512 /* inputs */
#define M 4   /* rows of X */

/* Prints the failing call's status and message and exits. */
static void check(woq_status s, const char* what) {
  if (s != WOQ_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, woq_status_string(s), woq_last_error());
    exit(1);
  }
}

/* Uniform in [-1, 1) from a small LCG, so the example needs no libraries. */
static float uniform(unsigned* state) {
  *state = *state * 1664525u + 1013904223u;
  return (float)(*state >> 8) / 8388608.0f - 1.0f;
}

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "quickstart.woq";
  static float w[N * K], bias[N], x[M * K], y[M * N];
  double err2 = 0, ref2 = 0;
  unsigned seed = 12345;
  int i, r, n, k;
  woq_quant_options qopts;
  woq_qmatrix* qm = NULL;
  woq_writer* writer = NULL;
  woq_file* file = NULL;
  woq_context* ctx = NULL;
  woq_tensor* tensor = NULL;
  woq_tensor_info info;

  for (i = 0; i < N * K; ++i) w[i] = 0.05f * uniform(&seed);
  for (i = 0; i < N; ++i) bias[i] = 0.1f * uniform(&seed);
  for (i = 0; i < M * K; ++i) x[i] = uniform(&seed);

  /* 1. Quantize and write. */
  check(woq_quant_options_init(&qopts), "woq_quant_options_init");
  qopts.bits = 4;
  qopts.group_size = 128;
  check(woq_quantize(w, WOQ_DTYPE_F32, N, K, &qopts, &qm), "woq_quantize");
  check(woq_writer_create(path, &writer), "woq_writer_create");
  check(woq_writer_add_tensor(writer, "proj.weight", qm, bias), "woq_writer_add_tensor");
  check(woq_writer_set_metadata_string(writer, "model.name", "quickstart"), "woq_writer_set_metadata_string");
  check(woq_writer_finish(writer), "woq_writer_finish");
  woq_writer_destroy(writer);
  woq_qmatrix_destroy(qm);

  /* 2. Open, load and multiply. */
  check(woq_file_open(path, &file), "woq_file_open");
  info.struct_size = sizeof info;
  check(woq_file_tensor_info_by_name(file, "proj.weight", &info), "woq_file_tensor_info_by_name");
  check(woq_context_create(NULL, &ctx), "woq_context_create");
  check(woq_tensor_load(ctx, file, "proj.weight", &tensor), "woq_tensor_load");
  check(woq_matmul(ctx, tensor, x, WOQ_DTYPE_F32, M, y, WOQ_DTYPE_F32), "woq_matmul");

  /* 3. Compare with Y = X W^T + b on the original fp32 weights. */
  for (r = 0; r < M; ++r)
    for (n = 0; n < N; ++n) {
      double ref = bias[n];
      for (k = 0; k < K; ++k) ref += (double)x[r * K + k] * w[n * K + k];
      err2 += (y[r * N + n] - ref) * (y[r * N + n] - ref);
      ref2 += ref * ref;
    }
  printf("libwoq %s: %s holds %s [%llu x %llu], %u-bit, group %u, %.3f bits/weight, %llu bytes on disk\n",
         woq_version_string(), path, info.name, (unsigned long long)info.rows, (unsigned long long)info.cols,
         info.bits, info.group_size, info.bits_per_weight, (unsigned long long)info.stored_bytes);
  printf("y[0][0..3] = %.5f %.5f %.5f %.5f\n", y[0], y[1], y[2], y[3]);
  printf("relative error vs fp32 matmul: %.4g (weight SQNR %.2f dB)\n", sqrt(err2 / ref2), info.sqnr_db);

  woq_tensor_destroy(tensor);
  woq_context_destroy(ctx);
  woq_file_close(file);
  return 0;
}
