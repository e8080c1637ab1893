// The safe crate end to end against libwoq.so: quantize, write, open,
// load, matmul (checked against float64 on the dequantized weights), and
// errors that carry libwoq's message.
use woq::{ActOrder, Backend, Context, File, Method, QMatrix, QuantOptions, Tensor, Writer};

fn weights(rows: usize, cols: usize) -> Vec<f32> {
    // A small LCG: deterministic, no dependencies.
    let mut state = 12345u32;
    (0..rows * cols)
        .map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            ((state >> 8) as f32 / 8388608.0 - 1.0) * 0.05
        })
        .collect()
}

fn temp_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("woq_rust_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn quantize_write_load_matmul() {
    let (rows, cols, m) = (48u64, 256u64, 3u64);
    let w = weights(rows as usize, cols as usize);
    let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.01).collect();
    let q = QMatrix::quantize(&w, rows, cols, QuantOptions { bits: 4, group_size: 64, ..Default::default() }).unwrap();
    assert_eq!(q.shape(), (rows, cols));
    let (_, rel, _) = q.stats().unwrap();
    assert!(rel > 0.0 && rel < 0.2, "relative error {rel}");
    let path = temp_path("roundtrip.woq");
    let mut writer = Writer::create(&path).unwrap();
    writer.add("proj.weight", &q, Some(&bias)).unwrap();
    writer.set_metadata("model.name", "rust test").unwrap();
    writer.finish().unwrap();

    let file = File::open(&path).unwrap();
    file.verify().unwrap();
    let infos = file.tensors().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!((infos[0].rows, infos[0].cols, infos[0].bits, infos[0].group_size), (rows, cols, 4, 64));
    assert!(infos[0].has_bias);

    for backend in [Backend::CpuReference, Backend::Cpu] {
        let ctx = Context::new(backend, 2).unwrap();
        let t = Tensor::load(&ctx, &file, "proj.weight").unwrap();
        assert_eq!(t.shape(), (rows, cols));
        let x: Vec<f32> = (0..m * cols).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
        let y = t.matmul(&x, m).unwrap();
        let w_hat = t.dequantize().unwrap();
        let (mut err, mut norm) = (0f64, 0f64);
        for r in 0..m as usize {
            for n in 0..rows as usize {
                let mut acc = bias[n] as f64;
                for k in 0..cols as usize {
                    acc += x[r * cols as usize + k] as f64 * w_hat[n * cols as usize + k] as f64;
                }
                err += (y[r * rows as usize + n] as f64 - acc).powi(2);
                norm += acc * acc;
            }
        }
        assert!((err / norm).sqrt() < 1e-5, "{backend:?}: relative error {}", (err / norm).sqrt());
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn errors_carry_the_library_message() {
    let e = File::open("/nonexistent/dir/model.woq").err().unwrap();
    assert_eq!(e.status_name, "WOQ_ERR_IO");
    assert!(e.message.contains("/nonexistent/dir/model.woq"), "{e}");

    let e = QMatrix::quantize(&[0.0; 10], 2, 4, QuantOptions::default()).err().unwrap();
    assert_eq!(e.status_name, "WOQ_ERR_INVALID_ARGUMENT");

    let w = weights(8, 64);
    let q = QMatrix::quantize(&w, 8, 64, QuantOptions { bits: 4, group_size: 32, symmetric: true, ..Default::default() }).unwrap();
    let ctx = Context::new(Backend::Cpu, 1).unwrap();
    let t = Tensor::from_qmatrix(&ctx, &q, None).unwrap();
    let e = t.matmul(&[1.0; 63], 1).err().unwrap();
    assert_eq!(e.status_name, "WOQ_ERR_SHAPE");
    // Without a GPU (or CUDA in the build) a CUDA context is refused, clearly.
    if let Err(e) = Context::new(Backend::Cuda, 0) {
        assert_eq!(e.status_name, "WOQ_ERR_UNSUPPORTED");
        assert!(e.message.contains("CUDA"));
    }
    ctx.synchronize().unwrap(); // nothing queued on CPU contexts

    let reference = Context::new(Backend::CpuReference, 1).unwrap();
    assert_eq!(reference.memory().unwrap(), (0, 0));
    let want = 8 * (64 / 8 * 4 + 2 * 3); // canonical: 8 rows of code words, 2 groups of fp16 scale + u8 zero-point
    {
        let t = Tensor::from_qmatrix(&reference, &q, None).unwrap();
        assert_eq!(reference.memory().unwrap(), (want, want));
        drop(t);
    }
    assert_eq!(reference.memory().unwrap(), (0, want));
}

#[test]
fn one_tensor_from_many_threads() {
    let w = weights(32, 128);
    let q = QMatrix::quantize(&w, 32, 128, QuantOptions::default()).unwrap();
    let ctx = Context::new(Backend::Cpu, 2).unwrap();
    let t = Tensor::from_qmatrix(&ctx, &q, None).unwrap();
    let x = vec![0.5f32; 128];
    let expect = t.matmul(&x, 1).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    assert_eq!(t.matmul(&x, 1).unwrap(), expect);
                }
            });
        }
    });
}

#[test]
fn abi_version_matches() {
    woq::check_abi().unwrap();
    assert!(woq::version().starts_with("1."));
}

#[test]
fn calibrated_methods_cut_output_error() {
    let (rows, cols, s) = (32u64, 128u64, 256u64);
    let mut state = 11u32;
    let mut uniform = move || {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        (state >> 8) as f32 / 8388608.0 - 1.0
    };
    let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * uniform()).collect();
    let mut x: Vec<f32> = (0..s * cols).map(|_| uniform()).collect();
    for (i, v) in x.iter_mut().enumerate() {
        if (i as u64 % cols) % 9 == 0 {
            *v *= 20.0; // channels with large activations
        }
    }
    let ctx = Context::new(Backend::Cpu, 1).unwrap();
    let error = |q: &QMatrix| {
        let t = Tensor::from_qmatrix(&ctx, q, None).unwrap();
        let y = t.matmul(&x, s).unwrap();
        let (mut e2, mut r2) = (0f64, 0f64);
        for r in 0..s as usize {
            for n in 0..rows as usize {
                let reference: f64 =
                    (0..cols as usize).map(|k| x[r * cols as usize + k] as f64 * w[n * cols as usize + k] as f64).sum();
                e2 += (y[r * rows as usize + n] as f64 - reference).powi(2);
                r2 += reference * reference;
            }
        }
        e2 / r2
    };
    let base = error(&QMatrix::quantize(&w, rows, cols, QuantOptions::default()).unwrap());
    let path = temp_path("act_order.woq");
    for method in [
        Method::Awq,
        Method::Gptq { act_order: ActOrder::Off },
        Method::Gptq { act_order: ActOrder::StaticGroups },
        Method::Gptq { act_order: ActOrder::Groups },
    ] {
        let q = QMatrix::quantize_calibrated(&w, rows, cols, QuantOptions { method, ..Default::default() }, &x).unwrap();
        let e = error(&q);
        assert!(e < base, "{method:?}: output error {e} not below RTN's {base}");
        assert_eq!(q.input_scales().unwrap().is_some(), method == Method::Awq);
        // matmul agrees with float64 on the tensor's own dequantized weights,
        // whatever input order it stores.
        let t = Tensor::from_qmatrix(&ctx, &q, None).unwrap();
        let w_hat = t.dequantize().unwrap();
        let y = t.matmul(&x[..cols as usize], 1).unwrap();
        for n in 0..rows as usize {
            let terms = (0..cols as usize).map(|k| x[k] as f64 * w_hat[n * cols as usize + k] as f64);
            let (reference, magnitude) = terms.fold((0.0, 0.0), |(s, m), p| (s + p, m + p.abs()));
            assert!((y[n] as f64 - reference).abs() <= 1e-5 * magnitude, "{method:?}: y[{n}] {} vs {reference}", y[n]);
        }
        let mut writer = Writer::create(&path).unwrap();
        writer.add("proj.weight", &q, None).unwrap();
        writer.finish().unwrap();
        let info = &File::open(&path).unwrap().tensors().unwrap()[0];
        assert_eq!(info.has_input_scales, method == Method::Awq, "{method:?}");
        assert_eq!(info.has_input_permutation, method == Method::Gptq { act_order: ActOrder::Groups }, "{method:?}");
    }
    std::fs::remove_file(&path).unwrap();
    let err = QMatrix::quantize(&w, rows, cols, QuantOptions { method: Method::Gptq { act_order: ActOrder::Off }, ..Default::default() })
        .err()
        .unwrap();
    assert!(err.message.contains("calibration"), "{err}");
}

#[test]
fn images_in_memory_open_as_files_do() {
    let w = weights(32, 128);
    let q = QMatrix::quantize(&w, 32, 128, QuantOptions::default()).unwrap();
    let path = temp_path("memory.woq");
    let mut writer = Writer::create(&path).unwrap();
    writer.add("proj.weight", &q, None).unwrap();
    writer.finish().unwrap();
    let ctx = Context::new(Backend::Cpu, 1).unwrap();
    let from_path = Tensor::load(&ctx, &File::open(&path).unwrap(), "proj.weight").unwrap().dequantize().unwrap();

    let image: Vec<u8> = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let file = File::from_bytes(image).unwrap();
    file.verify().unwrap();
    assert_eq!(file.tensors().unwrap()[0].name, "proj.weight");
    let t = Tensor::load(&ctx, &file, "proj.weight").unwrap();
    drop(file); // the image goes with it; the tensor does not need it
    assert_eq!(t.dequantize().unwrap(), from_path);

    static NOT_A_WOQ_FILE: [u8; 100] = [0x5a; 100];
    let e = File::from_bytes(&NOT_A_WOQ_FILE[..]).err().unwrap();
    assert_eq!(e.status_name, "WOQ_ERR_FORMAT");
    assert!(e.message.contains("in-memory image"), "{e}");
    let e = File::from_bytes(Vec::new()).err().unwrap();
    assert!(e.message.contains("0 bytes"), "{e}");
}

/// A GPTQ checkpoint (made by tests/golden/make_checkpoints.py; ctest names
/// it in WOQ_TEST_CHECKPOINT) converts to a .woq file.
#[test]
fn checkpoints_import() {
    let Ok(checkpoint) = std::env::var("WOQ_TEST_CHECKPOINT") else {
        eprintln!("skipped: WOQ_TEST_CHECKPOINT is not set; ctest sets it");
        return;
    };
    let output = temp_path("imported.woq");
    let mut calls = Vec::new();
    let report = woq::import_with_progress(&checkpoint, &output, "auto", false, |done, total, layer| {
        calls.push((done, total, layer.to_string()))
    })
    .unwrap();
    assert!(report.contains("format gptq_v2") && report.contains("2 layers converted"), "{report}");
    assert_eq!(
        calls,
        [(1, 2, "model.layers.0.self_attn.o_proj.weight".to_string()), (2, 2, "model.layers.0.self_attn.q_proj.weight".to_string())]
    );
    let infos = File::open(&output).unwrap().tensors().unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!((infos[1].name.as_str(), infos[1].rows, infos[1].cols, infos[1].has_bias),
               ("model.layers.0.self_attn.q_proj.weight", 64, 128, true));
    std::fs::remove_file(&output).unwrap();
    let e = woq::import("/nonexistent/model.safetensors", &output, "auto", false).err().unwrap();
    assert!(e.status_name == "WOQ_ERR_IO" && e.message.contains("/nonexistent/model.safetensors"), "{e}");
    let e = woq::import(&checkpoint, &output, "nonsense", false).err().unwrap();
    assert_eq!(e.status_name, "WOQ_ERR_INVALID_ARGUMENT");
    // A panicking callback does not unwind into libwoq; the output is removed.
    let e = woq::import_with_progress(&checkpoint, &output, "auto", false, |_, _, _| panic!("stop")).err().unwrap();
    assert!(e.message.contains("panicked"), "{e}");
    assert!(!std::path::Path::new(&output).exists());
}
