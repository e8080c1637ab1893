#!/bin/sh
# Regenerates the SWIG low layers from bindings/swig/woq.i and capi/woq.h:
#   bindings/csharp/generated/   (C# P/Invoke layer + woq_wrap.c)
#   bindings/go/woq/internal/woqc/ (cgo layer: woqc.go + woq_wrap.c)
#   bindings/swig/generate.sh [OUT_ROOT]   (default: the checked-in files)
# The output is checked in so hosts need no SWIG; ctest regenerates it into
# a temporary root and fails when the checked-in files are stale.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT}
CS=$OUT/bindings/csharp/generated
GO=$OUT/bindings/go/woq/internal/woqc
mkdir -p "$CS" "$GO"
rm -f "$CS"/*.cs "$CS"/woq_wrap.c "$GO"/woqc.go "$GO"/woq_wrap.c
cd "$ROOT"  # relative paths keep absolute paths out of the output
swig -csharp -DSWIG_CSHARP_NO_EXCEPTION_HELPER -DSWIG_CSHARP_NO_STRING_HELPER \
  -DSWIG_CSHARP_NO_IMCLASS_STATIC_CONSTRUCTOR -namespace Woq.Native -dllimport woq_csharp \
  -Icapi -outdir "$CS" -o "$CS/woq_wrap.c" bindings/swig/woq.i
swig -go -cgo -intgosize 64 -package woqc -Icapi -outdir "$GO" -o "$GO/woq_wrap.c" bindings/swig/woq.i
mv "$GO/woq.go" "$GO/woqc.go"
