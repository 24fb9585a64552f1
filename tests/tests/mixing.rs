//! Weight mixing against torch (fixtures/gen/make_mix_fixtures.py): f32 math, bf16
//! storage with round-to-nearest-even; rules in order; every error names its cause.

use sphinx_core::error::{MixError, WeightError};
use sphinx_core::mixing::{check_same_architecture, MixRules, MixedSource};
use sphinx_core::model::open_checkpoint;
use sphinx_core::weights::CheckpointSource;
use sphinx_core::weights::{write_safetensors, HostTensor, MemoryBytes, SafetensorsFile, WeightSource};
use sphinx_tests::{fixtures, model_dir};

fn checkpoint(name: &str) -> CheckpointSource<MemoryBytes> {
    let file = "consolidated.00-of-01.model.pth";
    open_checkpoint(vec![MemoryBytes::new(file, std::fs::read(model_dir(name).join(file)).unwrap())]).unwrap()
}

fn read(s: &impl WeightSource, n: &str) -> HostTensor {
    pollster::block_on(s.read(n)).unwrap()
}

fn mixed(rules: MixRules) -> MixedSource<CheckpointSource<MemoryBytes>, CheckpointSource<MemoryBytes>> {
    MixedSource::new(checkpoint("tiny-mix-real"), checkpoint("tiny-mix-synthetic"), rules, false).unwrap()
}

fn torch_mix(beta: &str) -> SafetensorsFile<MemoryBytes> {
    let bytes = std::fs::read(fixtures().join(format!("reference/mix-beta-{beta}.safetensors"))).unwrap();
    SafetensorsFile::open(MemoryBytes::new("torch", bytes)).unwrap()
}

#[test]
fn beta_one_is_real_and_zero_is_synthetic_bit_exactly() {
    let (real, synthetic) = (checkpoint("tiny-mix-real"), checkpoint("tiny-mix-synthetic"));
    let (one, zero) = (mixed(MixRules::uniform(1.0)), mixed(MixRules::uniform(0.0)));
    for n in real.names() {
        assert_eq!(read(&one, &n).bytes, read(&real, &n).bytes, "{n}");
        assert_eq!(read(&zero, &n).bytes, read(&synthetic, &n).bytes, "{n}");
    }
}

#[test]
fn mixes_equal_torch_bit_exactly() {
    for beta in ["0.5", "0.3"] {
        let m = mixed(MixRules::uniform(beta.parse().unwrap()));
        let t = torch_mix(beta);
        let mut n_tensors = 0;
        for n in m.names() {
            let (got, want) = (read(&m, &n), read(&t, &n));
            assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape), "{n}");
            assert_eq!(got.bytes, want.bytes, "β = {beta}: {n} differs from torch");
            n_tensors += 1;
        }
        assert!(n_tensors >= 20);
    }
}

#[test]
fn rules_apply_in_order() {
    let rules = MixRules::with_overrides(
        0.5,
        vec![MixRules::parse_rule("*layers.0.*=real").unwrap(), MixRules::parse_rule("*layers.*=0.0").unwrap()],
    );
    let m = mixed(rules);
    let (real, synthetic, half) = (checkpoint("tiny-mix-real"), checkpoint("tiny-mix-synthetic"), torch_mix("0.5"));
    for n in m.names() {
        let want = if n.starts_with("llma.layers.0.") {
            read(&real, &n)
        } else if n.starts_with("llma.layers.") {
            read(&synthetic, &n)
        } else {
            read(&half, &n)
        };
        assert_eq!(read(&m, &n).bytes, want.bytes, "{n}");
    }
}

/// The synthetic model's tensors, edited, as an in-memory checkpoint.
fn edited(edit: impl FnOnce(&mut Vec<(String, HostTensor)>)) -> SafetensorsFile<MemoryBytes> {
    let s = checkpoint("tiny-mix-synthetic");
    let mut t: Vec<_> = s.names().into_iter().map(|n| { let h = read(&s, &n); (n, h) }).collect();
    edit(&mut t);
    SafetensorsFile::open(MemoryBytes::new("edited", write_safetensors(&t, &Default::default()).unwrap())).unwrap()
}

fn mix_error(b: SafetensorsFile<MemoryBytes>, rules: MixRules) -> MixError {
    match MixedSource::new(checkpoint("tiny-mix-real"), b, rules, false) {
        Err(e) => e,
        Ok(m) => {
            let names = m.names();
            let err = names.iter().find_map(|n| pollster::block_on(m.read(n)).err()).expect("an error");
            match err {
                WeightError::Mix(e) => e,
                e => panic!("not a mixing error: {e}"),
            }
        }
    }
}

#[test]
fn every_mismatch_is_named() {
    let e = mix_error(edited(|t| t.retain(|(n, _)| n != "llma.layers.1.ffn_norm.weight")), MixRules::uniform(0.5));
    assert!(matches!(&e, MixError::KeyMismatch { name, missing_in } if name == "llma.layers.1.ffn_norm.weight" && missing_in == "synthetic"), "{e}");

    let e = mix_error(
        edited(|t| {
            let x = t.iter_mut().find(|(n, _)| n == "llma.norm.weight").unwrap();
            x.1 = HostTensor { dtype: x.1.dtype, shape: vec![4, 2], bytes: x.1.bytes.clone() };
        }),
        MixRules::uniform(0.5),
    );
    assert!(matches!(&e, MixError::ShapeMismatch { name, .. } if name == "llma.norm.weight"), "{e}");

    let e = mix_error(
        edited(|t| {
            let x = t.iter_mut().find(|(n, _)| n == "llma.norm.weight").unwrap();
            let v = x.1.to_f32().unwrap();
            x.1 = HostTensor { dtype: sphinx_core::weights::DType::F32, shape: x.1.shape.clone(), bytes: v.iter().flat_map(|f| f.to_le_bytes()).collect() };
        }),
        MixRules::uniform(0.5),
    );
    assert!(matches!(&e, MixError::DtypeMismatch { name, .. } if name == "llma.norm.weight"), "{e}");

    // A tensor no rule covers (a frozen encoder's) must be identical in both models.
    let frozen = |t: &mut Vec<(String, HostTensor)>, v: f32| {
        let bytes = half::bf16::from_f32(v).to_le_bytes().repeat(4);
        t.push(("llma.dinov2_vitg14.norm.bias".into(), HostTensor { dtype: sphinx_core::weights::DType::BF16, shape: vec![4], bytes }));
    };
    let real_with = |v: f32| edited(|t| {
        let s = checkpoint("tiny-mix-real");
        *t = s.names().into_iter().map(|n| { let h = read(&s, &n); (n, h) }).collect();
        frozen(t, v);
    });
    let m = MixedSource::new(real_with(1.0), edited(|t| frozen(t, 2.0)), MixRules::uniform(0.5), false).unwrap();
    let e = pollster::block_on(m.read("llma.dinov2_vitg14.norm.bias")).unwrap_err();
    assert!(e.to_string().contains("differs between the models but no rule mixes it"), "{e}");
    let m = MixedSource::new(real_with(1.0), edited(|t| frozen(t, 1.0)), MixRules::uniform(0.5), false).unwrap();
    assert!(pollster::block_on(m.read("llma.dinov2_vitg14.norm.bias")).is_ok(), "identical frozen weights pass");

    let e = MixedSource::new(checkpoint("tiny-mix-real"), checkpoint("tiny-mix-synthetic"), MixRules::uniform(1.5), false).err().unwrap();
    assert!(matches!(e, MixError::BetaOutOfRange { beta, .. } if beta == 1.5));
    assert!(MixedSource::new(checkpoint("tiny-mix-real"), checkpoint("tiny-mix-synthetic"), MixRules::uniform(1.5), true).is_ok());
}

#[test]
fn non_finite_results_are_caught_on_request() {
    let inf = edited(|t| {
        let x = t.iter_mut().find(|(n, _)| n == "llma.norm.weight").unwrap();
        x.1.bytes[0..2].copy_from_slice(&half::bf16::INFINITY.to_le_bytes());
    });
    let m = MixedSource::new(checkpoint("tiny-mix-real"), inf, MixRules::uniform(0.5), false).unwrap().check_finite(true);
    let e = pollster::block_on(m.read("llma.norm.weight")).unwrap_err();
    assert!(e.to_string().contains("the mix of 'llma.norm.weight' contains NaN or Inf"), "{e}");
}

#[test]
fn different_architectures_are_refused() {
    let text = |m: &str, f: &str| std::fs::read_to_string(model_dir(m).join(f)).unwrap();
    let e = check_same_architecture(
        (&text("tiny-mix-real", "config.json"), &text("tiny-mix-real", "meta.json")),
        (&text("tiny-llama-gqa", "config.json"), &text("tiny-llama-gqa", "meta.json")),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("the models have different architectures"), "{e}");
    let e = check_same_architecture(
        (&text("tiny-mix-real", "config.json"), &text("tiny-mix-real", "meta.json")),
        (&text("tiny-mix-real", "config.json"), r#"{"llama_type": "mixtral_sparse"}"#),
    )
    .unwrap_err();
    assert!(e.to_string().contains("llama_type 'llama' vs 'mixtral_sparse'"), "{e}");
}
