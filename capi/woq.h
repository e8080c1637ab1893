/*
 * woq.h - the one public header of libwoq, weight-only quantized inference.
 *
 * woq quantizes the weights W[N,K] of linear layers (N outputs, K inputs,
 * nn.Linear layout) to b-bit integer codes with one fp16 scale s and one
 * integer zero-point z per group of g consecutive inputs, stores them in a
 * checksummed, compressed .woq file, loads them into a backend and runs
 *
 *     Y[M,N] = X[M,K] . W_hat^T (+ bias),   W_hat = s * (q - z)
 *
 * with activations X and Y in fp32, fp16 or bf16 and fp32 accumulation.
 *
 * Conventions shared by every function:
 *  - Every function except the *_destroy / *_close functions, woq_version(),
 *    woq_status_string() and woq_last_error() returns a woq_status. Results
 *    come back through out-parameters, which are written only on success.
 *  - On failure, woq_last_error() returns a message for the calling thread
 *    naming the argument, tensor, shape or byte offset at fault.
 *  - Whoever allocates frees: handles created by woq_*_create / woq_*_open /
 *    woq_quantize / woq_tensor_load are released with the matching
 *    woq_*_destroy / woq_*_close. Passing NULL to those is a no-op.
 *  - Options structs begin with their own size (struct_size). Initialise
 *    them with the matching woq_*_options_init() so that fields added in later
 *    versions get their defaults; the library reads only struct_size bytes.
 *  - Strings are UTF-8 and NUL-terminated. Strings returned by the library
 *    are owned by the handle they came from and live as long as it.
 *  - Thread-safety is stated per function. In short: handles are immutable
 *    after creation, except a woq_writer (one thread at a time) and a
 *    woq_buffer's contents (the caller orders writes and reads). A context,
 *    file and loaded tensor may be used from many threads at once.
 *
 * This header is valid C99 and C++.
 */
#ifndef WOQ_H
#define WOQ_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(WOQ_BUILDING_LIBRARY)
#    define WOQ_API __declspec(dllexport)
#  else
#    define WOQ_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define WOQ_API __attribute__((visibility("default")))
#else
#  define WOQ_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- version */

#define WOQ_VERSION_MAJOR 1
#define WOQ_VERSION_MINOR 0
#define WOQ_VERSION_PATCH 0
/** Packed version: major * 10000 + minor * 100 + patch. */
#define WOQ_VERSION_NUMBER \
  (WOQ_VERSION_MAJOR * 10000 + WOQ_VERSION_MINOR * 100 + WOQ_VERSION_PATCH)

/**
 * Version of the loaded library, packed as WOQ_VERSION_NUMBER. Compare its
 * major part (value / 10000) with WOQ_VERSION_MAJOR to detect a mismatched
 * libwoq.so at run time. Thread-safe.
 */
WOQ_API uint32_t woq_version(void);

/** Version of the loaded library as a static string, e.g. "1.0.0". Thread-safe. */
WOQ_API const char* woq_version_string(void);

/* ---------------------------------------------------------------- errors */

typedef enum woq_status {
  WOQ_OK = 0,
  WOQ_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad enum, bad option value */
  WOQ_ERR_SHAPE = 2,            /* dimensions or sizes do not agree */
  WOQ_ERR_OUT_OF_MEMORY = 3,    /* an allocation failed */
  WOQ_ERR_IO = 4,               /* open/read/write/rename/mmap failed */
  WOQ_ERR_FORMAT = 5,           /* malformed .woq / safetensors content */
  WOQ_ERR_CHECKSUM = 6,         /* stored checksum does not match */
  WOQ_ERR_VERSION = 7,          /* file needs a newer reader (major version) */
  WOQ_ERR_NOT_FOUND = 8,        /* no tensor / metadata key with that name */
  WOQ_ERR_UNSUPPORTED = 9,      /* valid request this build or backend lacks */
  WOQ_ERR_LIMIT = 10,           /* a configured reader/writer limit exceeded */
  WOQ_ERR_INTERNAL = 11,        /* a bug in woq; please report it */
  WOQ_STATUS_MAX_ENUM = 0x7FFFFFFF /* keeps the enum 32-bit; not a status */
} woq_status;

/** Static, human-readable name of a status code ("WOQ_ERR_SHAPE"). Thread-safe. */
WOQ_API const char* woq_status_string(woq_status status);

/**
 * Message describing the most recent failure on the calling thread, or ""
 * when none. The pointer is valid until the next woq call on this thread.
 * Thread-safe (the message is thread-local).
 */
WOQ_API const char* woq_last_error(void);

/* ---------------------------------------------------------------- enums */
/* Each enum ends with a *_MAX_ENUM member so that it is 32 bits wide and any
 * value a host passes is representable; the library rejects values that are
 * not listed with WOQ_ERR_INVALID_ARGUMENT. */

/** Element type of activations, outputs and source weights. */
typedef enum woq_dtype {
  WOQ_DTYPE_F32 = 0,
  WOQ_DTYPE_F16 = 1,
  WOQ_DTYPE_BF16 = 2,
  WOQ_DTYPE_MAX_ENUM = 0x7FFFFFFF
} woq_dtype;

typedef enum woq_backend {
  WOQ_BACKEND_CPU_REFERENCE = 0, /* scalar reference kernel: the oracle */
  WOQ_BACKEND_CPU = 1,           /* optimized CPU kernels, multithreaded */
  WOQ_BACKEND_CUDA = 2,          /* NVIDIA GPU (WOQ_ERR_UNSUPPORTED if absent) */
  WOQ_BACKEND_MAX_ENUM = 0x7FFFFFFF
} woq_backend;

typedef enum woq_scheme {
  WOQ_SCHEME_ASYMMETRIC = 0, /* per-group scale + integer zero-point */
  WOQ_SCHEME_SYMMETRIC = 1,  /* zero-point fixed at 2^(bits-1) */
  WOQ_SCHEME_MAX_ENUM = 0x7FFFFFFF
} woq_scheme;

typedef enum woq_method {
  WOQ_METHOD_RTN = 0,  /* round to nearest on the min/max grid */
  WOQ_METHOD_MSE = 1,  /* RTN on a per-group clipped range minimizing weight error */
  WOQ_METHOD_HQQ = 2,  /* half-quadratic zero-point / scale optimization (no calibration) */
  WOQ_METHOD_GPTQ = 4, /* GPTQ on calibration activations, or imported from a GPTQ checkpoint */
  WOQ_METHOD_AWQ = 3,  /* AWQ on calibration activations, or imported from an AWQ checkpoint */
  WOQ_METHOD_MAX_ENUM = 0x7FFFFFFF
} woq_method;

/* ---------------------------------------------------------------- context */

/** A backend instance: owns its threads (and, for CUDA, a device stream). */
typedef struct woq_context woq_context;

typedef struct woq_context_options {
  size_t struct_size;   /* sizeof(woq_context_options) */
  woq_backend backend;  /* default WOQ_BACKEND_CPU */
  int32_t threads;      /* threads, the caller's included; 0 = one per online CPU (default) */
  int32_t device_index; /* GPU ordinal for WOQ_BACKEND_CUDA; default 0 */
  /* WOQ_BACKEND_CUDA only: a cudaStream_t of device_index on which the
   * context queues all its work (cudaStreamLegacy and cudaStreamPerThread
   * work too). The caller keeps it alive until woq_context_destroy returns.
   * NULL (default): the context creates and owns a non-blocking stream. */
  void* cuda_stream;
} woq_context_options;

/** Fill *options with defaults (sets struct_size). Thread-safe. */
WOQ_API woq_status woq_context_options_init(woq_context_options* options);

/**
 * Create a context for a backend. options may be NULL for the defaults.
 * @return WOQ_ERR_UNSUPPORTED for a backend this build or machine lacks.
 * The context must be destroyed with woq_context_destroy() after every tensor
 * and buffer made with it. Thread-safe.
 */
WOQ_API woq_status woq_context_create(const woq_context_options* options,
                                      woq_context** out_context);

/** Destroy a context. NULL is a no-op. Not safe while other calls use it. */
WOQ_API void woq_context_destroy(woq_context* context);

/** Backend and thread count a context actually runs with. Thread-safe. */
WOQ_API woq_status woq_context_info(const woq_context* context,
                                    woq_backend* out_backend,
                                    int32_t* out_threads);

/**
 * Name of the kernels a context runs, a static string: "reference" for
 * WOQ_BACKEND_CPU_REFERENCE; "amx", "avx512vnni", "avx512", "avx2" or "portable" for
 * WOQ_BACKEND_CPU (the best the CPU supports, or the one named by the
 * environment variable WOQ_CPU_ISA when the context was created);
 * "cuda-sm" and the device's compute capability (e.g. "cuda-sm90") for
 * WOQ_BACKEND_CUDA, with "-gemv", "-split", "-tile" or "-wgmma" appended
 * when the environment variable WOQ_CUDA_KERNEL forced one tensor-core
 * kernel for every M (benchmarks; all add the same products in the same
 * order; "wgmma" needs a compute capability 9.0 GPU), or "-cublas" when it
 * forced dequantize + cuBLAS for fp16 / bf16 X (weights rounded to X's
 * type, so not the same bits; needs libcublas.so.13 or .12 at run time),
 * or "-cublas-from-" and a row count where the automatic choice takes that
 * path from that many rows of X on (the environment variable
 * WOQ_CUDA_BLAS_MIN_ROWS sets the count; by default it never does).
 * Thread-safe.
 */
WOQ_API woq_status woq_context_kernel(const woq_context* context, const char** out_name);

/**
 * Wait until the work a context has queued is done. On CUDA contexts
 * woq_matmul_buffers only queues its kernels on the context's stream and
 * returns; woq_buffer_read, woq_dequantize and this call wait for them, and
 * a kernel's failure is reported by the first of them to return after it.
 * CPU contexts finish every call before it returns: this returns WOQ_OK.
 * Thread-safe.
 */
WOQ_API woq_status woq_context_synchronize(woq_context* context);

/**
 * Memory the context's tensors and buffers hold where its kernels read them:
 * device memory for WOQ_BACKEND_CUDA, host memory for the CPU backends
 * (packed codes, scales, zero-points, biases, AWQ input scales and
 * woq_buffers) and, on CUDA, the workspace kept for matmuls of 5..128 rows
 * of 16-bit X (8 * M * N floats for the largest such M * N so far; one a
 * CUDA graph captured stays until the context is destroyed, also once a
 * larger one replaces it). Not counted: per-call scratch, staging copies made during uploads, thread
 * stacks. out_peak_bytes: the most held at once since the context was
 * created. A tensor or buffer is counted from its creation to its
 * destruction.
 * Thread-safe.
 */
WOQ_API woq_status woq_context_memory(const woq_context* context,
                                      uint64_t* out_in_use_bytes,
                                      uint64_t* out_peak_bytes);

/* ---------------------------------------------------------------- quantize */

/** A quantized weight matrix held in host memory in the canonical layout. */
typedef struct woq_qmatrix woq_qmatrix;

typedef struct woq_quant_options {
  size_t struct_size; /* sizeof(woq_quant_options) */
  uint32_t bits;      /* 2..8; default 4 */
  uint32_t group_size; /* 32, 64, 128, 256, or 0 = per-channel (g = K); default 128 */
  woq_scheme scheme;  /* default WOQ_SCHEME_ASYMMETRIC */
  woq_method method;  /* default WOQ_METHOD_RTN */
  /* Calibration activations X[calibration_rows, cols] (row-major, the
   * weight's inputs as the model sees them) for methods that need them
   * (GPTQ, AWQ); NULL / 0 by default. Read during woq_quantize only. */
  const void* calibration;
  woq_dtype calibration_dtype; /* default WOQ_DTYPE_F32 */
  uint64_t calibration_rows;
  int32_t act_order;  /* GPTQ: 0 = natural column order (default); 1 = columns by
                       * decreasing Hessian diagonal with static groups (each group's
                       * grid from the original weights: the stored layout stays plain
                       * grouped); 2 = the same order with groups formed in it, stored
                       * with an input permutation (format 1.2) that woq_matmul applies */
  int32_t fold_input_scales; /* AWQ: 0 = the matrix keeps its per-input-channel factors and
                              * woq_matmul applies them to X (default); 1 = the host folds
                              * them into whatever produces X (woq_qmatrix_input_scales) */
} woq_quant_options;

/** Fill *options with defaults (sets struct_size). Thread-safe. */
WOQ_API woq_status woq_quant_options_init(woq_quant_options* options);

/**
 * Quantize a row-major weight matrix W[rows, cols] (rows = N outputs,
 * cols = K inputs) of type w_dtype. options may be NULL for the defaults.
 * Every weight must be finite. The result records error statistics
 * (see woq_qmatrix_stats) and is freed with woq_qmatrix_destroy().
 * Methods: RTN, MSE and HQQ need only the weights (fileformat/SPEC.md 5.4,
 * 5.5, 5.8);
 * GPTQ (SPEC.md 5.6) needs options->calibration, minimizes the layer's output
 * error on those activations and takes O(cols^2) memory and
 * O(cols^3 + rows * cols^2) time. AWQ (SPEC.md 5.7) needs it too and adds
 * per-input-channel factors that X is multiplied by (see fold_input_scales).
 * A pure function of its inputs.
 * @return WOQ_ERR_INVALID_ARGUMENT for NaN/inf weights or activations, bad
 *         bits or group, GPTQ without calibration, act_order without GPTQ;
 *         WOQ_ERR_SHAPE when rows or cols is 0 or cols is not a multiple of
 *         the group size.
 * Thread-safe (reentrant).
 */
WOQ_API woq_status woq_quantize(const void* weights, woq_dtype w_dtype,
                                uint64_t rows, uint64_t cols,
                                const woq_quant_options* options,
                                woq_qmatrix** out_qmatrix);

/**
 * The per-input-channel factors of an AWQ matrix (cols fp32 values, X is
 * multiplied by them): *out_count = cols, or 0 for a matrix without them.
 * With fold_input_scales = 1 the matrix expects X already multiplied (the
 * host folds the factors into the op producing X, e.g. a LayerNorm's gamma
 * and beta); otherwise woq_matmul applies them. out may be NULL to only ask
 * the count; else out_capacity_bytes must hold cols floats. Thread-safe.
 */
WOQ_API woq_status woq_qmatrix_input_scales(const woq_qmatrix* qmatrix, float* out,
                                            uint64_t out_capacity_bytes, uint64_t* out_count);

/** Free a quantized matrix. NULL is a no-op. */
WOQ_API void woq_qmatrix_destroy(woq_qmatrix* qmatrix);

/** Shape of a quantized matrix. Thread-safe. */
WOQ_API woq_status woq_qmatrix_shape(const woq_qmatrix* qmatrix,
                                     uint64_t* out_rows, uint64_t* out_cols);

/**
 * Quantization error of a matrix against its source weights: largest
 * |w_hat - w|, relative Frobenius error ||W_hat - W|| / ||W|| (0 when W = 0)
 * and SQNR in dB (+infinity when the error is zero). Any out pointer may be
 * NULL. Thread-safe.
 */
WOQ_API woq_status woq_qmatrix_stats(const woq_qmatrix* qmatrix,
                                     double* out_max_abs_error,
                                     double* out_rel_frobenius_error,
                                     double* out_sqnr_db);

/* ---------------------------------------------------------------- import */

/**
 * Convert an existing quantized checkpoint into a .woq file without
 * re-quantizing. `checkpoint_path` is a .safetensors file, a sharded
 * checkpoint's index (a name ending in ".json" whose "weight_map" names
 * shard files next to it), or a directory holding
 * model.safetensors.index.json or model.safetensors (else exactly one
 * *.safetensors.index.json, else exactly one *.safetensors); or a GGUF file
 * (llama.cpp, versions 2 and 3), whose Q4_0, Q5_0 and Q8_0 matrices are
 * imported exactly (the other tensors are skipped; a file with none of
 * those is refused with WOQ_ERR_UNSUPPORTED); or an ONNX model (a name
 * ending in ".onnx"; external data files next to it), whose MatMulNBits
 * weights (ONNX Runtime's 2 / 4 / 8-bit blocks) are imported exactly.
 * `format` is "auto", "gptq"
 * (AutoGPTQ v1: zero-points stored minus one), "gptq_v2", "awq" (AutoAWQ
 * GEMM), "compressed-tensors" (pack-quantized), "gguf" or "onnx". With
 * "auto" a GGUF file is recognised by its magic, an ONNX model by its
 * name, and a safetensors checkpoint's
 * flavour comes from quantize_config.json or config.json's
 * quantization_config next to the file or index, else from the tensor
 * names. Every packed linear layer becomes the tensor "<prefix>.weight"
 * (with its bias); other tensors are skipped. Act-order layers (GPTQ g_idx,
 * compressed-tensors weight_g_idx, not the plain k / group map) are stored
 * with an input permutation (format 1.2) that woq_matmul applies to X; a
 * g_idx whose groups do not all hold group_size inputs is refused with
 * WOQ_ERR_UNSUPPORTED. On success *out_report, if not NULL, receives a
 * summary (flavour and how it was found, layers converted, tensors
 * skipped) owned by the library and valid until the next woq call on this
 * thread. The .woq is written to a temporary file and renamed into
 * place. Thread-safe.
 */
WOQ_API woq_status woq_import_checkpoint(const char* checkpoint_path, const char* format,
                                         const char* woq_path, const char** out_report);

/** How woq_import_checkpoint_ex converts a checkpoint. */
typedef struct woq_import_options {
  size_t struct_size; /* sizeof(woq_import_options) */
  /* woq keeps fp16 scales. 0 (default): a scale fp16 cannot hold exactly
   * (ONNX Runtime's quantizer writes fp32 scales for fp32 models, some
   * compressed-tensors checkpoints bf16 or fp32 ones) is refused with
   * WOQ_ERR_UNSUPPORTED, so an import never changes the weights. 1: it is
   * rounded to the nearest fp16 (a relative change of at most 2^-11 in
   * fp16's normal range, far under the quantization error); the report and
   * the file's "import.scales_rounded" metadata say how many were and the
   * largest relative change. A scale beyond fp16's range, or one that would
   * round to zero, is refused either way. */
  int round_scales;
  /* Called on the calling thread after each layer is converted and written
   * to the temporary file: `done` of `total` layers (total is known before
   * the first call), `layer` its name (valid during the call). NULL
   * (default): not called. It must not call woq for this import; an import
   * that fails after some calls leaves no file. */
  void (*progress)(void* user_data, uint64_t done, uint64_t total, const char* layer);
  void* progress_user_data; /* passed to progress */
} woq_import_options;

/** Fill *options with defaults (sets struct_size). Thread-safe. */
WOQ_API woq_status woq_import_options_init(woq_import_options* options);

/**
 * woq_import_checkpoint with options; options may be NULL for the defaults
 * (then it is woq_import_checkpoint). Thread-safe.
 */
WOQ_API woq_status woq_import_checkpoint_ex(const char* checkpoint_path, const char* format,
                                            const char* woq_path, const woq_import_options* options,
                                            const char** out_report);

/* ---------------------------------------------------------------- writer */

/** Builds a .woq file; written to "<path>.tmp.<pid>" and renamed on finish. */
typedef struct woq_writer woq_writer;

/**
 * Start writing a .woq file at path. Nothing appears under path until
 * woq_writer_finish() succeeds; an existing file there stays intact until
 * then. Free with woq_writer_destroy(). Not thread-safe per writer.
 */
WOQ_API woq_status woq_writer_create(const char* path, woq_writer** out_writer);

/**
 * Add a quantized tensor under a unique name (1..1024 bytes of UTF-8).
 * bias may be NULL, else it points to `rows` fp32 values added to every
 * output row. The writer copies what it needs; qmatrix stays owned by the
 * caller. @return WOQ_ERR_INVALID_ARGUMENT for a duplicate or bad name.
 */
WOQ_API woq_status woq_writer_add_tensor(woq_writer* writer, const char* name,
                                         const woq_qmatrix* qmatrix,
                                         const float* bias);

/**
 * Set a metadata entry (key 1..256 bytes; string value up to 1 MiB).
 * Setting a key again replaces its value. Values are data, never evaluated.
 */
WOQ_API woq_status woq_writer_set_metadata_string(woq_writer* writer,
                                                  const char* key,
                                                  const char* value);
WOQ_API woq_status woq_writer_set_metadata_int(woq_writer* writer,
                                               const char* key, int64_t value);
WOQ_API woq_status woq_writer_set_metadata_float(woq_writer* writer,
                                                 const char* key, double value);

/**
 * Compress, checksum and write everything, then atomically rename the
 * temporary file to the final path. After success or failure the writer
 * accepts no more calls except woq_writer_destroy(); on failure the
 * temporary file is removed and any previous file at path is untouched.
 */
WOQ_API woq_status woq_writer_finish(woq_writer* writer);

/** Free a writer; an unfinished file is discarded. NULL is a no-op. */
WOQ_API void woq_writer_destroy(woq_writer* writer);

/* ---------------------------------------------------------------- file */

/** An open, validated .woq file (memory-mapped, or an image in memory; read-only). */
typedef struct woq_file woq_file;

/**
 * Open and validate a .woq file: header, directory checksum and every
 * offset, size and limit (see fileformat/SPEC.md). Chunk checksums are
 * verified when a chunk is read, or all at once by woq_file_verify().
 * @return WOQ_ERR_IO, WOQ_ERR_FORMAT, WOQ_ERR_CHECKSUM, WOQ_ERR_VERSION,
 *         WOQ_ERR_LIMIT with the byte offset at fault in woq_last_error().
 * Close with woq_file_close(). Thread-safe; the handle may be shared.
 */
WOQ_API woq_status woq_file_open(const char* path, woq_file** out_file);

/**
 * Limits a reader enforces before trusting a file; a file beyond one is
 * refused with WOQ_ERR_LIMIT. Hosts that open files from untrusted places
 * (downloads, mod folders) can tighten them.
 */
typedef struct woq_open_options {
  size_t struct_size;           /* sizeof(woq_open_options) */
  uint64_t max_directory_bytes; /* default 256 MiB */
  uint64_t max_tensors;         /* default 1,048,576 */
  uint64_t max_metadata;        /* default 65,536 entries */
  uint64_t max_tensor_bytes;    /* decoded bytes of one tensor; default 16 GiB */
} woq_open_options;

/** Fill *options with the default limits (sets struct_size). Thread-safe. */
WOQ_API woq_status woq_open_options_init(woq_open_options* options);

/**
 * woq_file_open with limits; options may be NULL for the defaults. Every
 * size the directory declares is checked against them at open, so no later
 * call allocates more than max_tensor_bytes for one tensor. Thread-safe.
 */
WOQ_API woq_status woq_file_open_ex(const char* path, const woq_open_options* options,
                                    woq_file** out_file);

/** What woq_file_open_memory does with the caller's bytes. */
typedef enum woq_memory_mode {
  WOQ_MEMORY_COPY = 0,  /* copied during the call; the caller may free or reuse them at once */
  WOQ_MEMORY_BORROW = 1, /* read in place, never written: they must stay valid and unchanged
                            until woq_file_close() (tensors loaded by then do not need them) */
  WOQ_MEMORY_MAX_ENUM = 0x7FFFFFFF
} woq_memory_mode;

/**
 * Open and validate a .woq image already in memory: an engine's archive
 * entry, an asset buffer, a download. The same checks and errors as
 * woq_file_open_ex (messages say "in-memory image" where they would name
 * the path); options may be NULL for the default limits. `data` needs no
 * alignment. WOQ_MEMORY_COPY needs `size` bytes more memory for the file's
 * life (WOQ_ERR_OUT_OF_MEMORY when they cannot be had); WOQ_MEMORY_BORROW
 * needs none. Thread-safe.
 */
WOQ_API woq_status woq_file_open_memory(const void* data, uint64_t size, woq_memory_mode mode,
                                        const woq_open_options* options, woq_file** out_file);

/** Close a file. NULL is a no-op. Tensors loaded from it stay valid. */
WOQ_API void woq_file_close(woq_file* file);

/**
 * Verify the checksum of every chunk and that every compressed chunk
 * decodes to its declared size. Thread-safe.
 * @return WOQ_ERR_CHECKSUM / WOQ_ERR_FORMAT naming the tensor and offset.
 */
WOQ_API woq_status woq_file_verify(const woq_file* file);

/** File format version (major, minor) the file declares. Thread-safe. */
WOQ_API woq_status woq_file_format_version(const woq_file* file,
                                           uint32_t* out_major,
                                           uint32_t* out_minor);

/** Number of tensors in the file. Thread-safe. */
WOQ_API woq_status woq_file_tensor_count(const woq_file* file, uint64_t* out_count);

/** Description of one stored tensor. Strings are owned by the woq_file. */
typedef struct woq_tensor_info {
  size_t struct_size;     /* set by the caller: sizeof(woq_tensor_info) */
  const char* name;
  uint64_t rows;          /* N: outputs */
  uint64_t cols;          /* K: inputs */
  uint32_t bits;
  uint32_t group_size;    /* equals cols for per-channel */
  woq_scheme scheme;
  woq_method method;
  woq_dtype source_dtype; /* dtype the weights were quantized from */
  int32_t has_bias;
  uint64_t stored_bytes;  /* bytes of all its chunks in the file */
  uint64_t raw_bytes;     /* bytes of codes + scales + zeros + bias decoded */
  double bits_per_weight; /* (codes + scales + zeros) bits / (rows * cols) */
  double max_abs_error;   /* quantization error recorded by the writer */
  double rel_frobenius_error;
  double sqnr_db;
  int32_t has_input_scales; /* AWQ factors stored (format 1.1); woq_matmul applies them */
  int32_t has_input_permutation; /* act-order input order stored (format 1.2); woq_matmul
                                  * gathers X's columns by it */
} woq_tensor_info;

/**
 * Describe tensor `index` (0-based, in file order) or the tensor named
 * `name`. The caller sets info->struct_size; fields past it are not written.
 * @return WOQ_ERR_NOT_FOUND for an unknown index / name. Thread-safe.
 */
WOQ_API woq_status woq_file_tensor_info(const woq_file* file, uint64_t index,
                                        woq_tensor_info* info);
WOQ_API woq_status woq_file_tensor_info_by_name(const woq_file* file,
                                                const char* name,
                                                woq_tensor_info* info);

typedef enum woq_metadata_type {
  WOQ_METADATA_STRING = 1,
  WOQ_METADATA_INT = 2,
  WOQ_METADATA_FLOAT = 3,
  WOQ_METADATA_MAX_ENUM = 0x7FFFFFFF
} woq_metadata_type;

/** Number of metadata entries. Thread-safe. */
WOQ_API woq_status woq_file_metadata_count(const woq_file* file, uint64_t* out_count);

/** Key and type of metadata entry `index`. Key owned by the file. Thread-safe. */
WOQ_API woq_status woq_file_metadata_key(const woq_file* file, uint64_t index,
                                         const char** out_key,
                                         woq_metadata_type* out_type);

/**
 * Value of metadata entry `key`. @return WOQ_ERR_NOT_FOUND when absent,
 * WOQ_ERR_INVALID_ARGUMENT when it has another type. The string is owned by
 * the file, NUL-terminated (out_length excludes the NUL; may be NULL).
 * Thread-safe.
 */
WOQ_API woq_status woq_file_metadata_string(const woq_file* file, const char* key,
                                            const char** out_value,
                                            uint64_t* out_length);
WOQ_API woq_status woq_file_metadata_int(const woq_file* file, const char* key,
                                         int64_t* out_value);
WOQ_API woq_status woq_file_metadata_float(const woq_file* file, const char* key,
                                           double* out_value);

/* ---------------------------------------------------------------- tensor */

/** A quantized tensor resident in a context's backend. Immutable. */
typedef struct woq_tensor woq_tensor;

/**
 * Load tensor `name` from a file into the context's backend: verifies the
 * chunk checksums, decompresses chunks in parallel on the context's threads
 * and repacks for the backend. Free with woq_tensor_destroy().
 * Thread-safe: many threads may load from one file and context at once.
 */
WOQ_API woq_status woq_tensor_load(woq_context* context, const woq_file* file,
                                   const char* name, woq_tensor** out_tensor);

/**
 * Load only output rows [row_begin, row_end) of tensor `name` (a
 * tensor-parallel shard): the result has row_end - row_begin rows and only
 * the chunks covering them are read. Thread-safe.
 * @return WOQ_ERR_SHAPE unless row_begin < row_end <= rows.
 */
WOQ_API woq_status woq_tensor_load_rows(woq_context* context, const woq_file* file,
                                        const char* name, uint64_t row_begin,
                                        uint64_t row_end, woq_tensor** out_tensor);

/**
 * Make a backend tensor straight from a quantized matrix (no file).
 * bias may be NULL or point to `rows` fp32 values. Thread-safe.
 */
WOQ_API woq_status woq_tensor_from_qmatrix(woq_context* context,
                                           const woq_qmatrix* qmatrix,
                                           const float* bias,
                                           woq_tensor** out_tensor);

/** Free a tensor. NULL is a no-op. Not safe while a matmul uses it. */
WOQ_API void woq_tensor_destroy(woq_tensor* tensor);

/** Shape (rows = N outputs, cols = K inputs) of a tensor. Thread-safe. */
WOQ_API woq_status woq_tensor_shape(const woq_tensor* tensor, uint64_t* out_rows,
                                    uint64_t* out_cols);

/**
 * Copy the tensor's fp32 bias (`rows` values) to host memory `out` of
 * out_capacity_bytes; *out_has_bias tells whether it has one (out is then
 * untouched when it has none; out may be NULL to only ask).
 * @return WOQ_ERR_SHAPE if out is too small. Thread-safe.
 */
WOQ_API woq_status woq_tensor_bias(woq_context* context, const woq_tensor* tensor, float* out,
                                   uint64_t out_capacity_bytes, int32_t* out_has_bias);

/**
 * Scale and zero-point of one group (output `row`, input group `group`), so
 * that its quantization levels are s * (q - z) for q in 0 .. 2^bits - 1
 * (for a tensor with input scales, before column k's factor multiplies them;
 * for a tensor with an input permutation, group j holds the stored inputs
 * j * group_size .. (j + 1) * group_size - 1: the model's inputs that the
 * permutation lists at those places, fileformat/SPEC.md 5.9).
 * @return WOQ_ERR_SHAPE for a row or group out of range. Thread-safe.
 */
WOQ_API woq_status woq_tensor_group(woq_context* context, const woq_tensor* tensor, uint64_t row,
                                    uint64_t group, float* out_scale, int32_t* out_zero_point);

/**
 * Y[M, N] = X[M, K] . W_hat^T (+ bias), fp32 accumulation. x and y are
 * row-major and must not overlap: host memory for CPU contexts. On CUDA
 * contexts both are device (or managed) memory of the context's GPU, and
 * the call is asynchronous as woq_matmul_buffers is; or both are host
 * memory, copied to the device and back, and the call returns when y is
 * written (convenient, slower); a mix is refused with
 * WOQ_ERR_INVALID_ARGUMENT. M >= 1. The tensor must come from the same
 * context. Thread-safe: a tensor may be used by many threads at once (each
 * with its own y).
 * CUDA graphs: with a caller's stream (woq_context_options.cuda_stream),
 * calls on device memory (and woq_matmul_buffers) may be captured into a
 * graph on that stream once a call of the same tensor and M has run
 * outside the capture, which sizes the workspace the context keeps; during
 * a capture, a call that would grow it and one on host memory are refused
 * with WOQ_ERR_UNSUPPORTED (nothing queued, the capture intact). Launch the
 * graph on that stream, and destroy it before the tensor and the context.
 * @return WOQ_ERR_SHAPE / WOQ_ERR_INVALID_ARGUMENT on misuse.
 */
WOQ_API woq_status woq_matmul(woq_context* context, const woq_tensor* tensor,
                              const void* x, woq_dtype x_dtype, uint64_t m,
                              void* y, woq_dtype y_dtype);

/**
 * Write the dequantized weights W_hat[N, K] = s * (q - z) (row-major, no
 * bias) to host memory `out` of out_capacity_bytes as out_dtype: the
 * effective weights X is multiplied by, in the model's input order (input
 * scales applied, an input permutation undone).
 * @return WOQ_ERR_SHAPE if out_capacity_bytes < N * K * sizeof(dtype).
 * Thread-safe.
 */
WOQ_API woq_status woq_dequantize(woq_context* context, const woq_tensor* tensor,
                                  void* out, woq_dtype out_dtype,
                                  uint64_t out_capacity_bytes);

/* ---------------------------------------------------------------- buffers */

/**
 * Backend memory owned by the library (host memory on CPU backends, device
 * memory on GPUs), so hosts that cannot allocate device memory themselves
 * (C#, Go) can drive any backend.
 */
typedef struct woq_buffer woq_buffer;

/** Allocate `bytes` (>= 1) of backend memory, zero-filled. Thread-safe. */
WOQ_API woq_status woq_buffer_create(woq_context* context, uint64_t bytes,
                                     woq_buffer** out_buffer);

/** Free a buffer. NULL is a no-op. Not safe while another call uses it. */
WOQ_API void woq_buffer_destroy(woq_buffer* buffer);

/** Size of a buffer in bytes. Thread-safe. */
WOQ_API woq_status woq_buffer_size(const woq_buffer* buffer, uint64_t* out_bytes);

/**
 * Copy `bytes` from host memory into the buffer at `offset` (write) or out
 * of it (read). @return WOQ_ERR_SHAPE if offset + bytes exceeds its size.
 * Concurrent calls on distinct ranges are safe; the caller orders the rest.
 */
WOQ_API woq_status woq_buffer_write(woq_buffer* buffer, uint64_t offset,
                                    const void* src, uint64_t bytes);
WOQ_API woq_status woq_buffer_read(const woq_buffer* buffer, uint64_t offset,
                                   void* dst, uint64_t bytes);

/**
 * woq_matmul on buffers: X is read from the start of x_buffer, Y written to
 * the start of y_buffer; both must be large enough (WOQ_ERR_SHAPE names the
 * needed and actual bytes), belong to the context, and be distinct.
 * Thread-safe as woq_matmul. On CUDA contexts it is asynchronous: it queues
 * the work on the context's stream, after every earlier write and matmul of
 * the context (see woq_context_synchronize).
 */
WOQ_API woq_status woq_matmul_buffers(woq_context* context, const woq_tensor* tensor,
                                      const woq_buffer* x_buffer, woq_dtype x_dtype,
                                      uint64_t m, woq_buffer* y_buffer,
                                      woq_dtype y_dtype);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* WOQ_H */
