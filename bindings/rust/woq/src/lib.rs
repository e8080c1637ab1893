//! Safe Rust interface to libwoq: quantize weights, write and read `.woq`
//! files, and run the fused dequantize + matmul.
//!
//! Handles free themselves on drop. Errors carry libwoq's status and the
//! message `woq_last_error()` gave for the failing call. `Context`, `File`
//! and `Tensor` are `Send + Sync` because woq.h documents them as safe to
//! use from many threads at once; a `Writer` is `Send` only.
//!
//! With the `dynamic` feature libwoq is loaded at run time (woq_sys::load):
//! a program built so starts without it, and its first constructor returns
//! an `Error` saying why the library could not be loaded.

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::ptr;

use woq_sys as sys;

/// A failed libwoq call: its status name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: u32,
    pub status_name: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_name, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libwoq returns NUL-terminated strings that live at least
    // until the next call on this thread; we copy at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn check(status: sys::woq_status) -> Result<()> {
    if status == sys::woq_status_WOQ_OK {
        return Ok(());
    }
    // SAFETY: both functions only read static / thread-local strings.
    let (name, message) = unsafe { (text(sys::woq_status_string(status)), text(sys::woq_last_error())) };
    Err(Error { status, status_name: name, message })
}

fn invalid(message: &str) -> Error {
    Error {
        status: sys::woq_status_WOQ_ERR_INVALID_ARGUMENT,
        status_name: "WOQ_ERR_INVALID_ARGUMENT".into(),
        message: message.into(),
    }
}

fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(&format!("{what} contains a NUL byte")))
}

/// Fails when libwoq cannot be loaded (the `dynamic` feature:
/// `WOQ_ERR_UNSUPPORTED`, saying why) or has another major version than the
/// one these bindings were generated for. Every constructor calls it.
pub fn check_abi() -> Result<()> {
    #[cfg(feature = "dynamic")]
    sys::load().map_err(|why| Error {
        status: sys::woq_status_WOQ_ERR_UNSUPPORTED,
        status_name: "WOQ_ERR_UNSUPPORTED".into(),
        message: why.into(),
    })?;
    // SAFETY: woq_version takes no arguments.
    let loaded = unsafe { sys::woq_version() };
    if loaded / 10000 != sys::WOQ_VERSION_MAJOR {
        return Err(Error {
            status: sys::woq_status_WOQ_ERR_VERSION,
            status_name: "WOQ_ERR_VERSION".into(),
            message: format!(
                "libwoq.so has version {}.{}, these bindings were generated for major version {}",
                loaded / 10000,
                loaded / 100 % 100,
                sys::WOQ_VERSION_MAJOR
            ),
        });
    }
    Ok(())
}

/// Version string of the loaded library, e.g. "1.0.0"; empty when the
/// `dynamic` feature cannot load it (`check_abi` says why).
pub fn version() -> String {
    #[cfg(feature = "dynamic")]
    if sys::load().is_err() {
        return String::new();
    }
    // SAFETY: returns a static string.
    text(unsafe { sys::woq_version_string() })
}

/// Converts a GPTQ / AWQ / compressed-tensors checkpoint, a GGUF file or an
/// ONNX model into a .woq file at `output` without re-quantizing
/// (docs/IMPORT.md) and returns libwoq's report. `format` is "auto", "gptq",
/// "gptq_v2", "awq", "compressed-tensors", "gguf" or "onnx"; `round_scales`
/// rounds scales fp16 cannot hold to the nearest fp16 instead of refusing.
pub fn import(checkpoint: &str, output: &str, format: &str, round_scales: bool) -> Result<String> {
    import_with_progress(checkpoint, output, format, round_scales, |_, _, _| {})
}

/// `import`, calling `progress(done, total, layer)` after each layer is
/// converted and written (on this thread; `total` is known from the first
/// call). A panic in `progress` is caught and returned as an error once the
/// import has finished, whose output is then removed.
pub fn import_with_progress<F>(
    checkpoint: &str,
    output: &str,
    format: &str,
    round_scales: bool,
    mut progress: F,
) -> Result<String>
where
    F: FnMut(u64, u64, &str),
{
    struct Progress<'a> {
        callback: &'a mut dyn FnMut(u64, u64, &str),
        panicked: bool,
    }
    unsafe extern "C" fn trampoline(user: *mut std::ffi::c_void, done: u64, total: u64, layer: *const c_char) {
        // SAFETY: `user` is the Progress below, alive for the whole call;
        // libwoq calls back on the thread that called it.
        let state = unsafe { &mut *user.cast::<Progress>() };
        if state.panicked {
            return;
        }
        let name = text(layer);
        // A panic must not unwind into C.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (state.callback)(done, total, &name)));
        state.panicked = outcome.is_err();
    }
    check_abi()?;
    let (from, to, kind) = (c_string(checkpoint, "checkpoint")?, c_string(output, "output")?, c_string(format, "format")?);
    let mut state = Progress { callback: &mut progress, panicked: false };
    // SAFETY: a plain struct initialised by the library.
    let mut options: sys::woq_import_options = unsafe { std::mem::zeroed() };
    check(unsafe { sys::woq_import_options_init(&mut options) })?;
    options.round_scales = round_scales as i32;
    options.progress = Some(trampoline);
    options.progress_user_data = (&mut state as *mut Progress).cast();
    let mut report: *const c_char = ptr::null();
    check(unsafe { sys::woq_import_checkpoint_ex(from.as_ptr(), kind.as_ptr(), to.as_ptr(), &options, &mut report) })?;
    // libwoq's thread-local text, copied at once on this thread.
    let report = text(report);
    if state.panicked {
        let _ = std::fs::remove_file(output);
        return Err(invalid("the progress callback panicked; the import's output was removed"));
    }
    Ok(report)
}

/// Which backend a context runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    CpuReference,
    Cpu,
    Cuda,
}

/// A backend instance with its own threads.
pub struct Context {
    raw: *mut sys::woq_context,
}

// SAFETY: woq.h documents contexts as usable from many threads at once.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Context {
    /// A context for `backend`; `threads` 0 means one per CPU.
    pub fn new(backend: Backend, threads: i32) -> Result<Context> {
        check_abi()?;
        // SAFETY: options is a plain struct initialised by the library.
        let mut options: sys::woq_context_options = unsafe { std::mem::zeroed() };
        check(unsafe { sys::woq_context_options_init(&mut options) })?;
        options.backend = match backend {
            Backend::CpuReference => sys::woq_backend_WOQ_BACKEND_CPU_REFERENCE,
            Backend::Cpu => sys::woq_backend_WOQ_BACKEND_CPU,
            Backend::Cuda => sys::woq_backend_WOQ_BACKEND_CUDA,
        };
        options.threads = threads;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::woq_context_create(&options, &mut raw) })?;
        Ok(Context { raw })
    }

    /// Waits for the work this context has queued (CUDA: matmuls on buffers
    /// return once queued); returns at once on CPU contexts.
    pub fn synchronize(&self) -> Result<()> {
        check(unsafe { sys::woq_context_synchronize(self.raw) })
    }

    /// Bytes this context's tensors and buffers hold (device memory on
    /// CUDA), and the most they held at once: `(in_use, peak)`.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let (mut in_use, mut peak) = (0u64, 0u64);
        check(unsafe { sys::woq_context_memory(self.raw, &mut in_use, &mut peak) })?;
        Ok((in_use, peak))
    }

    /// The kernels this context runs ("avx512", "reference", ...).
    pub fn kernel(&self) -> Result<String> {
        let mut name = ptr::null();
        check(unsafe { sys::woq_context_kernel(self.raw, &mut name) })?;
        Ok(text(name))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: raw came from woq_context_create; tensors borrow the
        // context, so none outlives it.
        unsafe { sys::woq_context_destroy(self.raw) }
    }
}

/// Quantization settings.
#[derive(Debug, Clone, Copy)]
pub struct QuantOptions {
    pub bits: u32,
    /// 32, 64, 128, 256, or 0 for per-channel.
    pub group_size: u32,
    pub symmetric: bool,
    pub method: Method,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions { bits: 4, group_size: 128, symmetric: false, method: Method::Rtn }
    }
}

/// How the grid of each group is chosen (fileformat/SPEC.md 5.4-5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest on the min/max grid.
    Rtn,
    /// RTN on a per-group clipped range minimizing the weight error.
    Mse,
    /// Half-quadratic scale / zero-point fitting (no calibration).
    Hqq,
    /// Per-input-channel scales from calibration activations.
    Awq,
    /// Error feedback through the calibration Hessian, columns in the
    /// order `act_order` says.
    Gptq { act_order: ActOrder },
}

/// The column order of GPTQ (woq_quant_options::act_order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActOrder {
    /// The natural order.
    Off,
    /// By decreasing Hessian diagonal, with static groups (each group's grid
    /// from the original weights): the stored layout stays plain.
    StaticGroups,
    /// The same order with groups formed in it, stored with an input
    /// permutation that `matmul` applies to X (more accurate; format 1.2).
    Groups,
}

/// A quantized matrix in host memory.
pub struct QMatrix {
    raw: *mut sys::woq_qmatrix,
    rows: u64,
    cols: u64,
}

// SAFETY: a qmatrix is immutable after creation.
unsafe impl Send for QMatrix {}
unsafe impl Sync for QMatrix {}

impl QMatrix {
    /// Quantizes row-major `weights` of shape rows x cols (methods that
    /// need no calibration).
    pub fn quantize(weights: &[f32], rows: u64, cols: u64, options: QuantOptions) -> Result<QMatrix> {
        Self::quantize_calibrated(weights, rows, cols, options, &[])
    }

    /// Quantizes with calibration activations X (row-major, whole rows of
    /// `cols` values) for `Method::Awq` and `Method::Gptq`.
    pub fn quantize_calibrated(
        weights: &[f32],
        rows: u64,
        cols: u64,
        options: QuantOptions,
        calibration: &[f32],
    ) -> Result<QMatrix> {
        check_abi()?;
        if rows.checked_mul(cols) != Some(weights.len() as u64) {
            return Err(invalid(&format!("weights hold {} values, not {rows} x {cols}", weights.len())));
        }
        if cols == 0 || calibration.len() as u64 % cols != 0 {
            return Err(invalid(&format!("calibration holds {} values, not whole rows of {cols}", calibration.len())));
        }
        let mut o: sys::woq_quant_options = unsafe { std::mem::zeroed() };
        check(unsafe { sys::woq_quant_options_init(&mut o) })?;
        o.bits = options.bits;
        o.group_size = options.group_size;
        o.scheme = if options.symmetric {
            sys::woq_scheme_WOQ_SCHEME_SYMMETRIC
        } else {
            sys::woq_scheme_WOQ_SCHEME_ASYMMETRIC
        };
        o.method = match options.method {
            Method::Rtn => sys::woq_method_WOQ_METHOD_RTN,
            Method::Mse => sys::woq_method_WOQ_METHOD_MSE,
            Method::Hqq => sys::woq_method_WOQ_METHOD_HQQ,
            Method::Awq => sys::woq_method_WOQ_METHOD_AWQ,
            Method::Gptq { .. } => sys::woq_method_WOQ_METHOD_GPTQ,
        };
        o.act_order = match options.method {
            Method::Gptq { act_order: ActOrder::StaticGroups } => 1,
            Method::Gptq { act_order: ActOrder::Groups } => 2,
            _ => 0,
        };
        if !calibration.is_empty() {
            o.calibration = calibration.as_ptr().cast(); // read during this call only
            o.calibration_dtype = sys::woq_dtype_WOQ_DTYPE_F32;
            o.calibration_rows = calibration.len() as u64 / cols;
        }
        let mut raw = ptr::null_mut();
        // SAFETY: the length was checked against rows x cols above.
        check(unsafe {
            sys::woq_quantize(weights.as_ptr().cast(), sys::woq_dtype_WOQ_DTYPE_F32, rows, cols, &o, &mut raw)
        })?;
        Ok(QMatrix { raw, rows, cols })
    }

    /// (rows = outputs N, cols = inputs K).
    pub fn shape(&self) -> (u64, u64) {
        (self.rows, self.cols)
    }

    /// AWQ's per-input-channel factors X is multiplied by, if any.
    pub fn input_scales(&self) -> Result<Option<Vec<f32>>> {
        let mut count = 0u64;
        check(unsafe { sys::woq_qmatrix_input_scales(self.raw, ptr::null_mut(), 0, &mut count) })?;
        if count == 0 {
            return Ok(None);
        }
        let mut v = vec![0f32; count as usize];
        // SAFETY: v holds `count` floats, the capacity passed.
        check(unsafe { sys::woq_qmatrix_input_scales(self.raw, v.as_mut_ptr(), count * 4, &mut count) })?;
        Ok(Some(v))
    }

    /// (max |w_hat - w|, relative Frobenius error, SQNR in dB).
    pub fn stats(&self) -> Result<(f64, f64, f64)> {
        let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
        check(unsafe { sys::woq_qmatrix_stats(self.raw, &mut a, &mut b, &mut c) })?;
        Ok((a, b, c))
    }
}

impl Drop for QMatrix {
    fn drop(&mut self) {
        unsafe { sys::woq_qmatrix_destroy(self.raw) }
    }
}

/// Writes a .woq file; nothing appears at the path until `finish`.
pub struct Writer {
    raw: *mut sys::woq_writer,
}

// SAFETY: a writer may move between threads but not be shared (woq.h).
unsafe impl Send for Writer {}

impl Writer {
    pub fn create(path: &str) -> Result<Writer> {
        check_abi()?;
        let path = c_string(path, "path")?;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::woq_writer_create(path.as_ptr(), &mut raw) })?;
        Ok(Writer { raw })
    }

    /// Adds a tensor; `bias`, if given, must hold one value per row.
    pub fn add(&mut self, name: &str, matrix: &QMatrix, bias: Option<&[f32]>) -> Result<()> {
        let name = c_string(name, "name")?;
        let bias_ptr = match bias {
            Some(b) if b.len() as u64 != matrix.rows => {
                return Err(invalid(&format!("bias holds {} values, the matrix has {} rows", b.len(), matrix.rows)))
            }
            Some(b) => b.as_ptr(),
            None => ptr::null(),
        };
        check(unsafe { sys::woq_writer_add_tensor(self.raw, name.as_ptr(), matrix.raw, bias_ptr) })
    }

    pub fn set_metadata(&mut self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (c_string(key, "key")?, c_string(value, "value")?);
        check(unsafe { sys::woq_writer_set_metadata_string(self.raw, key.as_ptr(), value.as_ptr()) })
    }

    /// Writes everything and renames the file into place.
    pub fn finish(self) -> Result<()> {
        check(unsafe { sys::woq_writer_finish(self.raw) })
        // Drop frees the writer.
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        unsafe { sys::woq_writer_destroy(self.raw) }
    }
}

/// Description of a stored tensor.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub rows: u64,
    pub cols: u64,
    pub bits: u32,
    pub group_size: u32,
    pub has_bias: bool,
    pub bits_per_weight: f64,
    /// AWQ factors stored; `matmul` applies them.
    pub has_input_scales: bool,
    /// An act-order input order stored; `matmul` gathers X by it.
    pub has_input_permutation: bool,
}

/// An open, validated .woq file.
pub struct File {
    raw: *mut sys::woq_file,
    // The image of `from_bytes`, read in place; dropped after `raw` is closed.
    _image: Option<Box<dyn AsRef<[u8]> + Send + Sync>>,
}

// SAFETY: woq.h documents files as shareable across threads.
unsafe impl Send for File {}
unsafe impl Sync for File {}

impl File {
    pub fn open(path: &str) -> Result<File> {
        check_abi()?;
        let path = c_string(path, "path")?;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::woq_file_open(path.as_ptr(), &mut raw) })?;
        Ok(File { raw, _image: None })
    }

    /// Opens a .woq image held in memory (`include_bytes!`, an archive entry,
    /// a download) with the checks `open` makes. It is read in place, not
    /// copied: the `File` owns `image` and drops it after closing the native
    /// file. Tensors loaded from the file do not need it.
    pub fn from_bytes<B>(image: B) -> Result<File>
    where
        B: AsRef<[u8]> + Send + Sync + 'static,
    {
        check_abi()?;
        // Boxed first, so that bytes stored inside `B` itself do not move.
        let image: Box<dyn AsRef<[u8]> + Send + Sync> = Box::new(image);
        let bytes = (*image).as_ref();
        let mut raw = ptr::null_mut();
        check(unsafe {
            sys::woq_file_open_memory(
                bytes.as_ptr().cast(),
                bytes.len() as u64,
                sys::woq_memory_mode_WOQ_MEMORY_BORROW,
                ptr::null(),
                &mut raw,
            )
        })?;
        Ok(File { raw, _image: Some(image) })
    }

    /// Checks every chunk's checksum.
    pub fn verify(&self) -> Result<()> {
        check(unsafe { sys::woq_file_verify(self.raw) })
    }

    pub fn tensors(&self) -> Result<Vec<TensorInfo>> {
        let mut count = 0u64;
        check(unsafe { sys::woq_file_tensor_count(self.raw, &mut count) })?;
        (0..count)
            .map(|i| {
                let mut info: sys::woq_tensor_info = unsafe { std::mem::zeroed() };
                info.struct_size = std::mem::size_of::<sys::woq_tensor_info>() as _;
                check(unsafe { sys::woq_file_tensor_info(self.raw, i, &mut info) })?;
                Ok(TensorInfo {
                    name: text(info.name),
                    rows: info.rows,
                    cols: info.cols,
                    bits: info.bits,
                    group_size: info.group_size,
                    has_bias: info.has_bias != 0,
                    bits_per_weight: info.bits_per_weight,
                    has_input_scales: info.has_input_scales != 0,
                    has_input_permutation: info.has_input_permutation != 0,
                })
            })
            .collect()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        unsafe { sys::woq_file_close(self.raw) }
    }
}

/// A tensor resident in a context's backend; it borrows the context.
pub struct Tensor<'ctx> {
    raw: *mut sys::woq_tensor,
    context: &'ctx Context,
    rows: u64,
    cols: u64,
    _owner: PhantomData<&'ctx Context>,
}

// SAFETY: loaded tensors are immutable and documented as thread-safe.
unsafe impl Send for Tensor<'_> {}
unsafe impl Sync for Tensor<'_> {}

impl<'ctx> Tensor<'ctx> {
    /// Loads tensor `name` of `file` into `context`.
    pub fn load(context: &'ctx Context, file: &File, name: &str) -> Result<Tensor<'ctx>> {
        let cname = c_string(name, "name")?;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::woq_tensor_load(context.raw, file.raw, cname.as_ptr(), &mut raw) })?;
        Tensor::wrap(context, raw)
    }

    /// Uploads a quantized matrix directly (no file).
    pub fn from_qmatrix(context: &'ctx Context, matrix: &QMatrix, bias: Option<&[f32]>) -> Result<Tensor<'ctx>> {
        if let Some(b) = bias {
            if b.len() as u64 != matrix.rows {
                return Err(invalid("bias length differs from the matrix's rows"));
            }
        }
        let mut raw = ptr::null_mut();
        let bias_ptr = bias.map_or(ptr::null(), |b| b.as_ptr());
        check(unsafe { sys::woq_tensor_from_qmatrix(context.raw, matrix.raw, bias_ptr, &mut raw) })?;
        Tensor::wrap(context, raw)
    }

    fn wrap(context: &'ctx Context, raw: *mut sys::woq_tensor) -> Result<Tensor<'ctx>> {
        let (mut rows, mut cols) = (0u64, 0u64);
        if let Err(e) = check(unsafe { sys::woq_tensor_shape(raw, &mut rows, &mut cols) }) {
            unsafe { sys::woq_tensor_destroy(raw) };
            return Err(e);
        }
        Ok(Tensor { raw, context, rows, cols, _owner: PhantomData })
    }

    /// (rows = outputs N, cols = inputs K).
    pub fn shape(&self) -> (u64, u64) {
        (self.rows, self.cols)
    }

    /// Y[m, N] = X[m, K] . W_hat^T (+ bias) for fp32 X; returns Y.
    pub fn matmul(&self, x: &[f32], m: u64) -> Result<Vec<f32>> {
        if m.checked_mul(self.cols) != Some(x.len() as u64) {
            return Err(Error {
                status: sys::woq_status_WOQ_ERR_SHAPE,
                status_name: "WOQ_ERR_SHAPE".into(),
                message: format!("x holds {} values, X[{m}, {}] needs {}", x.len(), self.cols, m * self.cols),
            });
        }
        let mut y = vec![0f32; (m * self.rows) as usize];
        // SAFETY: x and y were sized for m rows above.
        check(unsafe {
            sys::woq_matmul(
                self.context.raw,
                self.raw,
                x.as_ptr().cast(),
                sys::woq_dtype_WOQ_DTYPE_F32,
                m,
                y.as_mut_ptr().cast(),
                sys::woq_dtype_WOQ_DTYPE_F32,
            )
        })?;
        Ok(y)
    }

    /// The dequantized weights W_hat (rows x cols, row-major).
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; (self.rows * self.cols) as usize];
        check(unsafe {
            sys::woq_dequantize(
                self.context.raw,
                self.raw,
                out.as_mut_ptr().cast(),
                sys::woq_dtype_WOQ_DTYPE_F32,
                (out.len() * 4) as u64,
            )
        })?;
        Ok(out)
    }
}

impl Drop for Tensor<'_> {
    fn drop(&mut self) {
        unsafe { sys::woq_tensor_destroy(self.raw) }
    }
}
