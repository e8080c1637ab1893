/* Load a .woq file, run woq_matmul on fp32 activations read from a raw
 * little-endian file, print Y as fp32 bit patterns. The C#, Go and Rust
 * examples do the same on the same shared vectors (examples/data) and must
 * print the same bits (tests/check_examples.py).
 *
 *   woq_example_vectors [--memory] VECTORS.woq X.f32 [TENSOR]
 *
 * --memory opens the file as a game engine holding it in an archive would:
 * the bytes are read into memory first and woq reads them in place
 * (woq_file_open_memory, WOQ_MEMORY_BORROW) until woq_file_close.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <woq.h>

static int fail(const char* what, woq_status s) {
  fprintf(stderr, "%s failed: %s: %s\n", what, woq_status_string(s), woq_last_error());
  return 1;
}

/* The whole file in a malloc'd buffer (*out_size bytes), or NULL. */
static unsigned char* read_all(const char* path, uint64_t* out_size) {
  unsigned char* data = NULL;
  long size;
  FILE* f = fopen(path, "rb");
  if (f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (data = malloc((size_t)size)) != NULL && fread(data, 1, (size_t)size, f) == (size_t)size) {
    *out_size = (uint64_t)size;
  } else {
    free(data);
    data = NULL;
  }
  if (f) fclose(f);
  return data;
}

int main(int argc, char** argv) {
  const int from_memory = argc > 1 && strcmp(argv[1], "--memory") == 0;
  const char* name;
  unsigned char* image = NULL; /* the file's bytes with --memory: outlive `file` */
  uint64_t image_size = 0;
  woq_file* file = NULL;
  woq_context* ctx = NULL;
  woq_tensor* tensor = NULL;
  woq_tensor_info info;
  woq_status s;
  float *x = NULL, *y = NULL;
  long bytes;
  uint64_t m, r, n;
  int rc = 1;
  FILE* fx;

  argv += from_memory;
  argc -= from_memory;
  if (argc < 3) {
    fprintf(stderr, "usage: woq_example_vectors [--memory] VECTORS.woq X.f32 [TENSOR]\n");
    return 2;
  }
  name = argc > 3 ? argv[3] : "proj.weight";
  if (from_memory) {
    if (!(image = read_all(argv[1], &image_size))) {
      fprintf(stderr, "%s: cannot read\n", argv[1]);
      return 1;
    }
    s = woq_file_open_memory(image, image_size, WOQ_MEMORY_BORROW, NULL, &file);
  } else {
    s = woq_file_open(argv[1], &file);
  }
  if (s != WOQ_OK) {
    free(image);
    return fail(from_memory ? "woq_file_open_memory" : "woq_file_open", s);
  }
  info.struct_size = sizeof info;
  if ((s = woq_file_tensor_info_by_name(file, name, &info)) != WOQ_OK) {
    rc = fail("woq_file_tensor_info_by_name", s);
    goto done;
  }
  /* X holds m rows of info.cols fp32 values. */
  fx = fopen(argv[2], "rb");
  if (!fx || fseek(fx, 0, SEEK_END) != 0 || (bytes = ftell(fx)) <= 0 || bytes % (long)(4 * info.cols) != 0) {
    fprintf(stderr, "%s: cannot read rows of %llu fp32 values\n", argv[2], (unsigned long long)info.cols);
    if (fx) fclose(fx);
    goto done;
  }
  m = (uint64_t)bytes / (4 * info.cols);
  x = malloc((size_t)bytes);
  y = malloc((size_t)(m * info.rows * 4));
  rewind(fx);
  if (!x || !y || fread(x, 1, (size_t)bytes, fx) != (size_t)bytes) {
    fprintf(stderr, "%s: read failed\n", argv[2]);
    fclose(fx);
    goto done;
  }
  fclose(fx);

  if ((s = woq_context_create(NULL, &ctx)) != WOQ_OK) { rc = fail("woq_context_create", s); goto done; }
  if ((s = woq_tensor_load(ctx, file, name, &tensor)) != WOQ_OK) { rc = fail("woq_tensor_load", s); goto done; }
  if ((s = woq_matmul(ctx, tensor, x, WOQ_DTYPE_F32, m, y, WOQ_DTYPE_F32)) != WOQ_OK) {
    rc = fail("woq_matmul", s);
    goto done;
  }
  printf("libwoq %s: %s [%llu x %llu], %u-bit, group %u; X [%llu x %llu]\n", woq_version_string(), info.name,
         (unsigned long long)info.rows, (unsigned long long)info.cols, info.bits, info.group_size,
         (unsigned long long)m, (unsigned long long)info.cols);
  for (r = 0; r < m; ++r) {
    printf("y %llu:", (unsigned long long)r);
    for (n = 0; n < info.rows; ++n) {
      uint32_t bits;
      memcpy(&bits, &y[r * info.rows + n], 4);
      printf(" %08x", (unsigned)bits);
    }
    printf("\n");
  }
  rc = 0;
done:
  woq_tensor_destroy(tensor);
  woq_context_destroy(ctx);
  woq_file_close(file);
  free(image); /* after the file that reads it */
  free(x);
  free(y);
  return rc;
}
