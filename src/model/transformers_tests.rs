//! The mapping of transformers' DINOv3 names onto Meta's, on key sets built the way
//! `DINOv3ViTModel.state_dict()` names them.

use super::*;
use crate::model::checkpoint::check;
use crate::model::{Architecture, Ffn, Variant};

/// The keys and shapes `DINOv3ViTModel(config).state_dict()` has.
fn hf_keys(c: &HfConfig) -> BTreeMap<String, Vec<usize>> {
    let (d, f, p) = (c.hidden_size, c.intermediate_size, c.patch_size);
    let mut k: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>| k.insert(name, shape);
    put("embeddings.cls_token".into(), vec![1, 1, d]);
    put("embeddings.mask_token".into(), vec![1, 1, d]);
    put(
        "embeddings.register_tokens".into(),
        vec![1, c.num_register_tokens, d],
    );
    put(
        "embeddings.patch_embeddings.weight".into(),
        vec![d, 3, p, p],
    );
    put("embeddings.patch_embeddings.bias".into(), vec![d]);
    for i in 0..c.num_hidden_layers {
        let b = format!("model.layer.{i}");
        for n in ["norm1", "norm2"] {
            put(format!("{b}.{n}.weight"), vec![d]);
            put(format!("{b}.{n}.bias"), vec![d]);
        }
        for (x, bias) in [
            ("q", c.query_bias),
            ("k", c.key_bias),
            ("v", c.value_bias),
            ("o", true),
        ] {
            put(format!("{b}.attention.{x}_proj.weight"), vec![d, d]);
            if bias {
                put(format!("{b}.attention.{x}_proj.bias"), vec![d]);
            }
        }
        put(format!("{b}.layer_scale1.lambda1"), vec![d]);
        put(format!("{b}.layer_scale2.lambda1"), vec![d]);
        let mut linear = |n: &str, o: usize, i: usize| {
            put(format!("{b}.mlp.{n}.weight"), vec![o, i]);
            put(format!("{b}.mlp.{n}.bias"), vec![o]);
        };
        if c.use_gated_mlp {
            linear("gate_proj", f, d);
        }
        linear("up_proj", f, d);
        linear("down_proj", d, f);
    }
    put("norm.weight".into(), vec![d]);
    put("norm.bias".into(), vec![d]);
    k
}

fn hub_config() -> HfConfig {
    // facebook/dinov3-vits16-pretrain-lvd1689m's config.json fields that matter.
    HfConfig {
        num_register_tokens: 4,
        ..HfConfig::default()
    }
}

#[test]
fn the_hub_vits16_config_maps_onto_metas_vits16_key_set_exactly() {
    let c = hub_config();
    let hf = hf_keys(&c);
    let sources = meta_sources(&c, &hf).unwrap();
    let shapes = meta_shapes(&sources, &hf);
    let arch = Architecture::infer(&shapes).unwrap();
    assert_eq!(Variant::of(&arch).unwrap().name, "vits16");
    assert!(
        check(&shapes, &arch).is_empty(),
        "{}",
        check(&shapes, &arch)
    );
    assert_eq!(
        sources["blocks.3.attn.qkv.bias"],
        Source::ConcatRows(vec![
            Piece::Tensor("model.layer.3.attention.q_proj.bias".into()),
            Piece::Zeros(384),
            Piece::Tensor("model.layer.3.attention.v_proj.bias".into()),
        ])
    );
    assert_eq!(shapes["mask_token"], [1, 384]);
    assert_eq!(
        sources["blocks.0.ls2.gamma"],
        Source::Same("model.layer.0.layer_scale2.lambda1".into())
    );
}

#[test]
fn a_gated_mlp_maps_gate_up_down_to_w1_w2_w3() {
    let c = HfConfig {
        use_gated_mlp: true,
        hidden_act: "silu".into(),
        hidden_size: 64,
        num_attention_heads: 2,
        num_hidden_layers: 2,
        intermediate_size: 176,
        num_register_tokens: 4,
        ..HfConfig::default()
    };
    let hf = hf_keys(&c);
    let sources = meta_sources(&c, &hf).unwrap();
    let arch = Architecture::infer(&meta_shapes(&sources, &hf)).unwrap();
    assert_eq!((arch.ffn, arch.ffn_hidden), (Ffn::SwiGlu, 176));
    assert_eq!(
        sources["blocks.1.mlp.w1.weight"],
        Source::Same("model.layer.1.mlp.gate_proj.weight".into())
    );
    assert_eq!(
        sources["blocks.1.mlp.w2.bias"],
        Source::Same("model.layer.1.mlp.up_proj.bias".into())
    );
    assert_eq!(
        sources["blocks.1.mlp.w3.weight"],
        Source::Same("model.layer.1.mlp.down_proj.weight".into())
    );
}

#[test]
fn rope_periods_are_left_to_the_backend_with_their_shape() {
    let c = hub_config();
    let hf = hf_keys(&c);
    let sources = meta_sources(&c, &hf).unwrap();
    assert_eq!(
        sources["rope_embed.periods"],
        Source::RopePeriods {
            rope_theta: 100.0,
            head_dim: 64
        }
    );
    assert_eq!(meta_shapes(&sources, &hf)["rope_embed.periods"], [16]);
}

#[test]
fn without_qkv_bias_there_is_no_bias_and_a_k_bias_needs_no_mask() {
    let none = HfConfig {
        query_bias: false,
        value_bias: false,
        ..hub_config()
    };
    let s = meta_sources(&none, &hf_keys(&none)).unwrap();
    assert!(!s.contains_key("blocks.0.attn.qkv.bias"));
    let with_k = HfConfig {
        key_bias: true,
        ..hub_config()
    };
    let s = meta_sources(&with_k, &hf_keys(&with_k)).unwrap();
    assert!(!s.contains_key("blocks.0.attn.qkv.bias_mask"));
    let arch = Architecture::infer(&meta_shapes(&s, &hf_keys(&with_k))).unwrap();
    assert!(arch.qkv_bias && !arch.qkv_bias_mask);
}

#[test]
fn refusals_say_why() {
    let c = hub_config();
    let mut hf = hf_keys(&c);
    hf.insert("classifier.weight".into(), vec![1000, 384]);
    assert_eq!(
        meta_sources(&c, &hf).unwrap_err(),
        "it holds `classifier.weight`, which Meta's DINOv3 has no place for (a head or adapter?)"
    );
    let mut hf = hf_keys(&c);
    hf.remove("model.layer.5.attention.v_proj.weight");
    assert_eq!(
        meta_sources(&c, &hf).unwrap_err(),
        "it has no `model.layer.5.attention.v_proj.weight` that config.json implies"
    );
    let relu = HfConfig {
        hidden_act: "relu".into(),
        ..c.clone()
    };
    assert!(
        meta_sources(&relu, &hf_keys(&relu))
            .unwrap_err()
            .starts_with("hidden_act is \"relu\"")
    );
    let eps = HfConfig {
        layer_norm_eps: 1e-6,
        ..c.clone()
    };
    assert!(
        meta_sources(&eps, &hf_keys(&eps))
            .unwrap_err()
            .contains("1e-5")
    );
    assert!(
        HfConfig::parse(r#"{"model_type": "dinov2"}"#)
            .unwrap_err()
            .contains("\"dinov2\"")
    );
    assert_eq!(HfConfig::parse("{}").unwrap(), HfConfig::default());
}

#[test]
fn the_layer_names_save_pretrained_writes_are_read_as_they_are() {
    let c = hub_config();
    let saved: BTreeMap<String, Vec<usize>> = hf_keys(&c)
        .into_iter()
        .map(|(k, s)| (k.strip_prefix("model.").unwrap_or(&k).to_string(), s))
        .collect();
    assert!(saved.contains_key("layer.0.norm1.weight"));
    let sources = meta_sources(&c, &saved).unwrap();
    assert_eq!(
        sources["blocks.2.norm2.bias"],
        Source::Same("layer.2.norm2.bias".into())
    );
    let arch = Architecture::infer(&meta_shapes(&sources, &saved)).unwrap();
    assert_eq!(Variant::of(&arch).unwrap().name, "vits16");
}
