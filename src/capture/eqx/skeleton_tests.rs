use super::*;
use crate::capture::eqx::leaves::tests::npy;
use std::io::{Seek, SeekFrom, Write};

fn vits16_at(img_size: usize) -> EqxConfig {
    EqxConfig::of_variant(&Variant::lookup("vits16").unwrap(), img_size).unwrap()
}

fn tiny() -> EqxConfig {
    EqxConfig {
        img_size: 32,
        patch_size: 16,
        embed_dim: 64,
        depth: 2,
        num_heads: 2,
        num_storage_tokens: 4,
    }
}

/// The leaves a file of `c`'s layout reads as.
fn leaves_of(c: &EqxConfig) -> Vec<Leaf> {
    layout(c)
        .into_iter()
        .map(|(_, e)| match e {
            Expected::F32(shape) => Leaf::Float { bytes: 4, shape },
            Expected::Int(v) => Leaf::Int {
                shape: vec![],
                value: Some(v),
            },
            Expected::FloatScalar => Leaf::Float {
                bytes: 8,
                shape: vec![],
            },
            Expected::BoolScalar => Leaf::Bool { shape: vec![] },
        })
        .collect()
}

/// Writes a `.eqx` of `c`'s layout as `eqx.tree_serialise_leaves` would (array data left as a
/// hole of zeros: the file is sparse) and returns its path.
fn write_eqx(dir: &Path, name: &str, c: &EqxConfig) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    for (_, e) in layout(c) {
        let record = match &e {
            Expected::F32(shape) => npy("<f4", shape, &[]),
            Expected::Int(v) => npy("<i8", &[], &v.to_le_bytes()),
            Expected::FloatScalar => npy("<f8", &[], &0f64.to_le_bytes()),
            Expected::BoolScalar => npy("|b1", &[], &[1]),
        };
        file.write_all(&record).unwrap();
        if let Expected::F32(shape) = e {
            let bytes = 4 * shape.iter().product::<usize>() as i64;
            file.seek(SeekFrom::Current(bytes)).unwrap();
        }
    }
    let end = file.stream_position().unwrap();
    file.set_len(end).unwrap();
    path
}

#[test]
fn the_layout_is_the_example_models_records() {
    // As eqx.tree_serialise_leaves writes jax2onnx 0.17.1's VisionTransformer (equinox 0.13.8):
    // 5 stem records, 22 per block, 4 at the end.
    let l = layout(&vits16_at(224));
    assert_eq!(l.len(), 5 + 22 * 12 + 4);
    assert_eq!(l[2], ("patch_embed.num_patches".into(), Expected::Int(196)));
    assert_eq!(
        l[4],
        ("storage_tokens".into(), Expected::F32(vec![1, 4, 384]))
    );
    assert_eq!(l[5 + 22].0, "blocks[1].norm1.weight");
    assert_eq!(l[5 + 13].0, "blocks[0].attn.num_heads");
    assert_eq!(l.last().unwrap().1, Expected::F32(vec![16]));
    let no_storage = EqxConfig {
        num_storage_tokens: 0,
        ..tiny()
    };
    assert_eq!(layout(&no_storage).len(), 4 + 22 * 2 + 4);
}

#[test]
fn the_leaves_tell_every_dimension() {
    for c in [vits16_at(224), vits16_at(64), tiny()] {
        assert_eq!(Found::of(&leaves_of(&c)).config(), Some(c));
    }
    let found = Found::of(&[Leaf::Float {
        bytes: 4,
        shape: vec![8, 8],
    }]);
    assert_eq!(found, Found::default());
}

#[test]
fn a_hub_variant_is_inferred_from_its_leaves() {
    for (name, img) in [("vits16", 224), ("vitb16", 448), ("vitl16", 224)] {
        let c = EqxConfig::of_variant(&Variant::lookup(name).unwrap(), img).unwrap();
        let leaves = leaves_of(&c);
        let got = infer(&leaves, &Found::of(&leaves), &VARIANTS).unwrap();
        assert_eq!(got, (c, name));
    }
}

#[test]
fn no_fit_is_refused_with_what_the_file_holds() {
    let leaves = leaves_of(&tiny());
    let e = infer(&leaves, &Found::of(&leaves), &VARIANTS)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "no DINOv3 variant that jax2onnx's example model can hold (vits16, vitb16, vitl16) fits \
         it: its leaves are those of --config img_size=32,patch_size=16,embed_dim=64,depth=2,\
         num_heads=2,num_storage_tokens=4. If that is the model, pass that --config"
    );
}

#[test]
fn an_ambiguous_file_is_refused_with_the_candidates() {
    let vits16 = Variant::lookup("vits16").unwrap();
    let twin = Variant {
        name: "vits16twin",
        ..vits16
    };
    let leaves = leaves_of(&vits16_at(224));
    let e = infer(&leaves, &Found::of(&leaves), &[vits16, twin])
        .unwrap_err()
        .to_string();
    let text = vits16_at(224).text();
    assert_eq!(
        e,
        format!(
            "it fits several variants: vits16 ({text}), vits16twin ({text}); say which with \
             --variant NAME"
        )
    );
}

#[test]
fn config_text_parses_with_the_rest_read_off_the_file() {
    let found = Found::of(&leaves_of(&tiny()));
    let full = tiny().text();
    assert_eq!(
        full,
        "img_size=32,patch_size=16,embed_dim=64,depth=2,num_heads=2,num_storage_tokens=4"
    );
    assert_eq!(parse_config(&full, &Found::default()).unwrap(), tiny());
    assert_eq!(parse_config(" num_heads = 2 ,", &found).unwrap(), tiny());
    let err = |text: &str, found: &Found| parse_config(text, found).unwrap_err().to_string();
    assert_eq!(
        err("heads=2", &found),
        "--config \"heads=2\": \"heads=2\" is not KEY=VALUE with KEY one of img_size, \
         patch_size, embed_dim, depth, num_heads, num_storage_tokens"
    );
    assert_eq!(
        err("depth=2,depth=3", &found),
        "--config \"depth=2,depth=3\": depth is given twice"
    );
    assert_eq!(
        err("depth=two", &found),
        "--config \"depth=two\": depth=two is not a non-negative integer"
    );
    assert_eq!(
        err(",", &found),
        "--config \",\" gives no KEY=VALUE (keys: img_size, patch_size, embed_dim, depth, num_heads, num_storage_tokens)"
    );
    assert_eq!(
        err("depth=2", &Found::default()),
        "--config \"depth=2\" lacks img_size, and the file does not tell it: give it"
    );
    assert!(err("img_size=40", &found).ends_with("img_size is not a multiple of patch_size"));
    assert!(
        err("num_heads=3", &found)
            .ends_with("embed_dim is not a multiple of 4 × num_heads (DinoRoPE needs it)")
    );
    assert!(
        err("depth=0", &found).ends_with("every value but num_storage_tokens must be positive")
    );
}

#[test]
fn variant_names_in_every_form_resolve_a_bare_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_eqx(dir.path(), "eqx_dinov3_vits16_mapped.eqx", &vits16_at(224));
    let inferred = resolve(&model, None, None).unwrap();
    assert_eq!(inferred.config, vits16_at(224));
    assert_eq!(inferred.from, ConfigSource::Inferred("vits16"));
    assert!(!inferred.sidecar);
    for name in ["vits16", "dinov3_vits16", "dinov3_vits16_pretrain_lvd1689m"] {
        let r = resolve(&model, Some(name), None).unwrap();
        assert_eq!(
            (r.config, r.from),
            (vits16_at(224), ConfigSource::Variant("vits16"))
        );
    }
    let err = |variant: Option<&str>, config: Option<&str>| {
        format!("{:#}", resolve(&model, variant, config).unwrap_err())
    };
    assert_eq!(
        err(Some("dinov3_vits16plus_pretrain_lvd1689m"), None),
        "--variant dinov3_vits16plus_pretrain_lvd1689m: vits16plus has a SwiGLU feed-forward; \
         jax2onnx's Equinox DINOv3 has only the GELU Mlp, so no .eqx of that model holds it"
    );
    assert!(
        err(Some("vitq16"), None).starts_with("unknown DINOv3 variant \"vitq16\"; known: vits16")
    );
    let e = err(Some("dinov3_vitb16_pretrain_lvd1689m"), None);
    assert!(e.contains("eqx_dinov3_vits16_mapped.eqx does not hold jax2onnx's Equinox DINOv3 with img_size=224,patch_size=16,embed_dim=768,depth=12,num_heads=12,num_storage_tokens=4 (--variant vitb16): record 0 (patch_embed.proj.weight) is f32 [384, 3, 16, 16], not f32 [768, 3, 16, 16]; its leaves are those of --config img_size=224,patch_size=16,embed_dim=384,"), "{e}");
    let e = err(None, Some("img_size=448"));
    assert!(e.contains("(--config): record 2 (patch_embed.num_patches) is the integer 196, not the integer 784;"), "{e}");
    assert_eq!(
        err(Some("vits16"), Some("depth=12")),
        "give --variant or --config, not both"
    );
}

#[test]
fn a_sidecar_gives_the_config_and_must_agree_with_flags() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_eqx(dir.path(), "m.eqx", &tiny());
    let e = format!("{:#}", resolve(&model, None, None).unwrap_err());
    assert!(
        e.starts_with(&format!(
            "{} has no sidecar: no DINOv3 variant",
            model.display()
        )),
        "{e}"
    );
    let sidecar = dir.path().join("m.eqx.json");
    let config: serde_json::Map<String, serde_json::Value> = CONFIG_KEYS
        .iter()
        .zip(tiny().values())
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    std::fs::write(
        &sidecar,
        serde_json::json!({ "config": config }).to_string(),
    )
    .unwrap();
    let r = resolve(&model, None, None).unwrap();
    assert_eq!(
        (r.config, r.from, r.sidecar),
        (tiny(), ConfigSource::Sidecar(sidecar.clone()), true)
    );
    assert_eq!(
        resolve(&model, None, Some("depth=2")).unwrap().config,
        tiny()
    );
    let e = format!(
        "{:#}",
        resolve(&model, None, Some("num_storage_tokens=0")).unwrap_err()
    );
    assert!(e.contains("the config given (img_size=32,patch_size=16,embed_dim=64,depth=2,num_heads=2,num_storage_tokens=0) is not the one of its sidecar"), "{e}");
    std::fs::write(&sidecar, "{\"config\": {\"depth\": 2}}").unwrap();
    let e = format!("{:#}", resolve(&model, None, None).unwrap_err());
    assert!(
        e.contains("has no config of integers img_size, patch_size"),
        "{e}"
    );
}
