/* SWIG interface to capi/woq.h, one file for C# and Go.
 *
 * SWIG generates the low layer only: every woq_* function with handles as
 * plain pointer-sized integers, the option / info structs as proxy classes,
 * out-parameters as C# `out` arguments or Go one-element slices. The
 * idiomatic layers (bindings/csharp/Woq.cs, bindings/go/woq/woq.go) own the
 * handles (Dispose + finalizers / Close + finalizers), turn statuses into
 * exceptions / errors carrying woq_last_error(), check array lengths before
 * every call and keep handles alive across native calls.
 *
 * C#: no native-to-managed callbacks at all (Unity IL2CPP cannot call into
 * managed code from native code). Strings go in as NUL-terminated UTF-8
 * byte[] and come out as IntPtr that the managed layer decodes; arrays are
 * pinned by `fixed` in the managed layer and passed as IntPtr.
 */
%module woq

/* These must reach SWIG's own C# support files, so they are given on the
 * command line (-D...); refuse to generate a C# layer without them. */
#if defined(SWIGCSHARP) && !(defined(SWIG_CSHARP_NO_EXCEPTION_HELPER) && \
    defined(SWIG_CSHARP_NO_STRING_HELPER) && defined(SWIG_CSHARP_NO_IMCLASS_STATIC_CONSTRUCTOR))
#error "run swig -csharp with -DSWIG_CSHARP_NO_EXCEPTION_HELPER -DSWIG_CSHARP_NO_STRING_HELPER -DSWIG_CSHARP_NO_IMCLASS_STATIC_CONSTRUCTOR (IL2CPP)"
#endif

%{
#include "woq.h"
%}

%include <stdint.i>
%include <typemaps.i>

#define WOQ_API

/* The header's own version: bindings compare it with woq_version() at load.
 * In C# constants are compile-time constants of the generated code. */
#if defined(SWIGCSHARP)
%csconst(1);
#endif
%constant uint32_t WOQ_BINDINGS_VERSION_MAJOR = WOQ_VERSION_MAJOR;

/* size_t only appears as struct_size, which the *_init functions set. */
%apply uint64_t { size_t };

/* ------------------------------------------------------------------ C# */
#if defined(SWIGCSHARP)

%define WOQ_CS_POINTER(CTYPE)
%typemap(ctype) CTYPE "void*"
%typemap(imtype) CTYPE "global::System.IntPtr"
%typemap(cstype) CTYPE "global::System.IntPtr"
%typemap(in) CTYPE %{ $1 = ($1_ltype)$input; %}
%typemap(out) CTYPE %{ $result = (void*)$1; %}
%typemap(csin) CTYPE "$csinput"
%typemap(csout, excode=SWIGEXCODE) CTYPE { global::System.IntPtr ret = $imcall;$excode return ret; }
%typemap(csvarout, excode=SWIGEXCODE2) CTYPE %{ get { global::System.IntPtr ret = $imcall;$excode return ret; } %}
%enddef

%define WOQ_CS_OUT_POINTER(CTYPE)
%typemap(ctype) CTYPE "void**"
%typemap(imtype) CTYPE "out global::System.IntPtr"
%typemap(cstype) CTYPE "out global::System.IntPtr"
%typemap(in) CTYPE %{ $1 = ($1_ltype)$input; %}
%typemap(csin) CTYPE "out $csinput"
%enddef

/* Handles, raw memory and returned strings are IntPtr. */
WOQ_CS_POINTER(woq_context*) WOQ_CS_POINTER(const woq_context*)
WOQ_CS_POINTER(woq_qmatrix*) WOQ_CS_POINTER(const woq_qmatrix*)
WOQ_CS_POINTER(woq_writer*)
WOQ_CS_POINTER(woq_file*) WOQ_CS_POINTER(const woq_file*)
WOQ_CS_POINTER(woq_tensor*) WOQ_CS_POINTER(const woq_tensor*)
WOQ_CS_POINTER(woq_buffer*) WOQ_CS_POINTER(const woq_buffer*)
WOQ_CS_POINTER(void*) WOQ_CS_POINTER(const void*)
WOQ_CS_POINTER(float*) WOQ_CS_POINTER(const float*)
WOQ_CS_POINTER(char*) WOQ_CS_POINTER(const char*)

WOQ_CS_OUT_POINTER(woq_context**) WOQ_CS_OUT_POINTER(woq_qmatrix**)
WOQ_CS_OUT_POINTER(woq_writer**) WOQ_CS_OUT_POINTER(woq_file**)
WOQ_CS_OUT_POINTER(woq_tensor**) WOQ_CS_OUT_POINTER(woq_buffer**)
WOQ_CS_OUT_POINTER(const char**)

/* String arguments: NUL-terminated UTF-8 bytes made by the managed layer. */
%typemap(ctype) const char* STRING_IN "const char*"
%typemap(imtype) const char* STRING_IN "byte[]"
%typemap(cstype) const char* STRING_IN "byte[]"
%typemap(in) const char* STRING_IN %{ $1 = ($1_ltype)$input; %}
%typemap(csin) const char* STRING_IN "$csinput"
%apply const char* STRING_IN {
  const char* path, const char* name, const char* key, const char* value,
  const char* format, const char* checkpoint_path, const char* woq_path
};

/* Enum outputs as int. */
%typemap(ctype) woq_backend* out_backend, woq_metadata_type* out_type "int*"
%typemap(imtype) woq_backend* out_backend, woq_metadata_type* out_type "out int"
%typemap(cstype) woq_backend* out_backend, woq_metadata_type* out_type "out int"
%typemap(in) woq_backend* out_backend, woq_metadata_type* out_type %{ $1 = ($1_ltype)$input; %}
%typemap(csin) woq_backend* out_backend, woq_metadata_type* out_type "out $csinput"

#endif /* SWIGCSHARP */

/* ------------------------------------------------------------------ Go */
#if defined(SWIGGO)

%define WOQ_GO_HANDLE(CTYPE)
%typemap(gotype) CTYPE "uintptr"
%typemap(in) CTYPE %{ $1 = ($1_ltype)$input; %}
%typemap(out) CTYPE %{ $result = (uintptr_t)$1; %}
%enddef

/* A handle out-parameter is a one-element []uintptr the call fills. */
%define WOQ_GO_OUT_HANDLE(CTYPE)
%typemap(gotype) CTYPE "[]uintptr"
%typemap(in) CTYPE %{
  if ($input.len < 1) _swig_gopanic("handle slot must hold 1 element");
  $1 = ($1_ltype)$input.array;
%}
%enddef

WOQ_GO_HANDLE(woq_context*) WOQ_GO_HANDLE(const woq_context*)
WOQ_GO_HANDLE(woq_qmatrix*) WOQ_GO_HANDLE(const woq_qmatrix*)
WOQ_GO_HANDLE(woq_writer*)
WOQ_GO_HANDLE(woq_file*) WOQ_GO_HANDLE(const woq_file*)
WOQ_GO_HANDLE(woq_tensor*) WOQ_GO_HANDLE(const woq_tensor*)
WOQ_GO_HANDLE(woq_buffer*) WOQ_GO_HANDLE(const woq_buffer*)
WOQ_GO_OUT_HANDLE(woq_context**) WOQ_GO_OUT_HANDLE(woq_qmatrix**)
WOQ_GO_OUT_HANDLE(woq_writer**) WOQ_GO_OUT_HANDLE(woq_file**)
WOQ_GO_OUT_HANDLE(woq_tensor**) WOQ_GO_OUT_HANDLE(woq_buffer**)

/* Memory the library reads or writes is a Go []byte (cgo pins it for the
 * call); the idiomatic layer views []float32 / []uint16 as bytes and checks
 * every length first. An empty slice passes NULL. */
%typemap(gotype) const void*, void*, const float*, float* "[]byte"
%typemap(in) const void*, void*, const float*, float* %{
  $1 = ($1_ltype)($input.len ? $input.array : 0);
%}

/* Strings the library returns through out-parameters: copied into Go. */
%typemap(gotype) const char** "*string"
%typemap(in) const char** (const char* text = 0) %{ $1 = ($1_ltype)&text; %}
%typemap(argout, fragment="AllocateString") const char** %{
  *$input = Swig_AllocateString(text$argnum ? text$argnum : "", text$argnum ? strlen(text$argnum) : 0);
%}
%typemap(goargout, fragment="CopyString") const char** %{
  *$1 = swigCopyString(*$input)
%}

/* Enum outputs as int32 slices. */
%typemap(gotype) woq_backend* out_backend, woq_metadata_type* out_type "[]int32"
%typemap(in) woq_backend* out_backend, woq_metadata_type* out_type %{
  if ($input.len < 1) _swig_gopanic("output slot must hold 1 element");
  $1 = ($1_ltype)$input.array;
%}

/* C memory must not keep a Go pointer after a call returns, so Go cannot set
 * woq_quant_options::calibration itself: woq_quantize_calibrated points it
 * at the Go slice for the duration of the one call. */
%ignore woq_quant_options::calibration;
%inline %{
static woq_status woq_quantize_calibrated(const void* weights, woq_dtype w_dtype, uint64_t rows, uint64_t cols,
                                          woq_quant_options* options, const void* calibration,
                                          woq_dtype calibration_dtype, uint64_t calibration_rows,
                                          woq_qmatrix** out_qmatrix) {
  woq_status status;
  if (!options) return woq_quantize(weights, w_dtype, rows, cols, options, out_qmatrix);
  options->calibration = calibration;
  options->calibration_dtype = calibration_dtype;
  options->calibration_rows = calibration_rows;
  status = woq_quantize(weights, w_dtype, rows, cols, options, out_qmatrix);
  options->calibration = 0;
  return status;
}
%}

/* cgo finds woq.h in the source tree and links libwoq; CGO_LDFLAGS=-L<dir>
 * names where libwoq.so is. */
%insert(cgo_comment_typedefs) %{
#cgo CFLAGS: -I${SRCDIR}/../../../../../capi
#cgo LDFLAGS: -lwoq
%}

#endif /* SWIGGO */

/* Import progress is a C callback: hosts of these bindings (IL2CPP, cgo)
 * cannot be called back from native code, so it stays NULL here. */
%ignore woq_import_options::progress;
%ignore woq_import_options::progress_user_data;

/* Scalar out-parameters (both languages: C# `out`, Go one-element slices). */
%apply uint64_t* OUTPUT { uint64_t* out_rows, uint64_t* out_cols, uint64_t* out_count,
                          uint64_t* out_length, uint64_t* out_bytes,
                          uint64_t* out_in_use_bytes, uint64_t* out_peak_bytes };
%apply uint32_t* OUTPUT { uint32_t* out_major, uint32_t* out_minor };
%apply int32_t* OUTPUT { int32_t* out_threads, int32_t* out_has_bias, int32_t* out_zero_point };
%apply int64_t* OUTPUT { int64_t* out_value };
%apply double* OUTPUT { double* out_value, double* out_max_abs_error,
                        double* out_rel_frobenius_error, double* out_sqnr_db };
%apply float* OUTPUT { float* out_scale };

/* The tensor name is owned by its woq_file: read-only, read through a
 * method so that C# gets an IntPtr (decoded while the file is alive). */
%ignore woq_tensor_info::name;
%extend woq_tensor_info {
  /* Born with struct_size set, so hosts need not know sizeof. */
  woq_tensor_info() {
    woq_tensor_info* info = (woq_tensor_info*)calloc(1, sizeof *info);
    if (info) info->struct_size = sizeof *info;
    return info;
  }
  ~woq_tensor_info() { free($self); }
  const char* name_utf8() const { return $self->name; }
}

%include "woq.h"
