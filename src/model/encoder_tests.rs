//! Tests of the built-in encoder that need no ONNX Runtime: shapes, parameter counts, costs,
//! validation messages, and the emitted protobuf.

use super::onnx::{ModelProto, tensor_shape_proto::dimension::Value as DimValue};
use super::*;
use prost::Message;

fn shapes(encoder: &BuiltinEncoder) -> Vec<(String, Vec<usize>)> {
    encoder
        .layers()
        .iter()
        .map(|l| (l.name.clone(), l.output_shape.clone()))
        .collect()
}

#[test]
fn default_spec_shape_chain_at_96_and_224() -> Result<(), ModelError> {
    for (size, maps) in [
        (96, [48, 24, 24, 12, 6, 3]),
        (224, [112, 56, 56, 28, 14, 7]),
    ] {
        let encoder = BuiltinEncoder::new(EncoderSpec::default(), size)?;
        let expected: Vec<(String, Vec<usize>)> = [
            ("stem.conv", vec![32, maps[0], maps[0]]),
            ("stem.bn", vec![32, maps[0], maps[0]]),
            ("stem.relu", vec![32, maps[0], maps[0]]),
            ("stem.pool", vec![32, maps[1], maps[1]]),
            ("stage0.block0", vec![32, maps[2], maps[2]]),
            ("stage1.block0", vec![64, maps[3], maps[3]]),
            ("stage2.block0", vec![128, maps[4], maps[4]]),
            ("stage3.block0", vec![256, maps[5], maps[5]]),
            ("pool", vec![256, 1, 1]),
            ("flatten", vec![256]),
            ("embed", vec![256]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(shapes(&encoder), expected, "at {size} px");
    }
    Ok(())
}

#[test]
fn stems_set_the_downsampling_before_stage_zero() -> Result<(), ModelError> {
    // At 32 px: the pooled stem leaves stage 0 an 8² map, the strided one 16², the full one 32².
    for (stem, stage0, min_size) in [
        (Stem::Pooled, 8, 16),
        (Stem::Strided, 16, 8),
        (Stem::Full, 32, 4),
    ] {
        let spec = EncoderSpec {
            stages: vec![1, 1, 1],
            stem,
            ..Default::default()
        };
        let encoder = BuiltinEncoder::new(spec.clone(), 32)?;
        let names: Vec<String> = shapes(&encoder).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names.contains(&"stem.pool".to_string()),
            stem == Stem::Pooled
        );
        let stage_maps: Vec<Vec<usize>> = shapes(&encoder)
            .into_iter()
            .filter(|(n, _)| n.starts_with("stage"))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            stage_maps,
            vec![
                vec![32, stage0, stage0],
                vec![64, stage0 / 2, stage0 / 2],
                vec![128, stage0 / 4, stage0 / 4],
            ],
            "{stem:?}"
        );
        assert_eq!(BuiltinEncoder::min_input_size(&spec), min_size, "{stem:?}");
        assert!(BuiltinEncoder::new(spec, min_size - 1).is_err(), "{stem:?}");
    }
    Ok(())
}

/// Three stages of one block behind the strided stem, with `"stages"` features.
fn strided_stages(width: u32, grid: u32) -> EncoderSpec {
    EncoderSpec {
        width,
        stages: vec![1, 1, 1],
        features: Features::Stages,
        stem: Stem::Strided,
        grid,
        ..Default::default()
    }
}

#[test]
fn stage_grid_sets_the_feature_length() -> Result<(), ModelError> {
    // Strided stem at 32 px: stage maps 16², 8², 4² with 8, 16, 32 channels.
    for (grid, dim) in [
        (1, 8 + 16 + 32),
        (2, (8 + 16 + 32) * 4),
        (4, (8 + 16 + 32) * 16),
        // An 8-cell grid is every pixel of the 8² and 4² maps.
        (8, 8 * 64 + 16 * 64 + 32 * 16),
    ] {
        assert_eq!(
            BuiltinEncoder::new(strided_stages(8, grid), 32)?.embedding_dim(),
            dim,
            "grid {grid}"
        );
    }
    Ok(())
}

#[test]
fn stage_features_are_bounded_at_32768_values() -> Result<(), ModelError> {
    // Strided stem at 64 px, 8x8 grid: (w + 2w + 4w) channels x 64 cells = 448·w values.
    let spec = |width| strided_stages(width, 8);
    assert_eq!(BuiltinEncoder::new(spec(48), 64)?.embedding_dim(), 21_504);
    assert_eq!(BuiltinEncoder::new(spec(73), 64)?.embedding_dim(), 32_704);
    let refused = BuiltinEncoder::new(spec(74), 64)
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|m| m.contains("33152 (lower `grid` or `width`)")),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn cell_windows_cover_the_whole_side() {
    for side in 1..40 {
        for cells in 1..=side {
            let (kernel, stride) = encoder::cell_window(side, cells);
            let (kernel, stride) = (kernel as usize, stride as usize);
            assert!(kernel >= stride && stride >= 1, "{side}/{cells}");
            // The last cell ends exactly at the last pixel.
            assert_eq!((cells - 1) * stride + kernel, side, "{side}/{cells}");
        }
    }
    // Two cells of an odd side overlap by one, as in the original 2×2 grid.
    assert_eq!(encoder::cell_window(7, 2), (4, 3));
    assert_eq!(encoder::cell_window(10, 3), (4, 3));
    assert_eq!(encoder::cell_window(16, 4), (4, 4));
}

#[test]
fn param_count_of_a_tiny_spec_matches_hand_count() -> Result<(), ModelError> {
    let spec = EncoderSpec {
        width: 4,
        stages: vec![1, 1],
        embedding_dim: 8,
        in_channels: 3,
        ..Default::default()
    };
    let encoder = BuiltinEncoder::new(spec, 16)?;
    // stem conv 4·3·9 + BN 2·4; stage0 block: 2 convs 4·4·9 + 2 BN 2·4;
    // stage1 block: conv 8·4·9 + conv 8·8·9 + 1×1 shortcut 8·4 + 3 BN 2·8; embed 8·8 + 8.
    let hand = (108 + 8) + (2 * 144 + 2 * 8) + (288 + 576 + 32 + 3 * 16) + (64 + 8);
    assert_eq!(hand, 1436);
    assert_eq!(encoder.num_params(), hand);
    // Running statistics: 2 per BN channel, 6 BNs with 4,4,4,8,8,8 channels.
    let buffers: usize = encoder
        .param_specs()
        .iter()
        .filter(|p| !p.trainable)
        .map(|p| p.numel())
        .sum();
    assert_eq!(buffers, 2 * (4 + 4 + 4 + 8 + 8 + 8));
    assert_eq!(encoder.init_params(0).num_elements(), hand + buffers);
    Ok(())
}

#[test]
fn default_encoder_size_and_cost() -> Result<(), ModelError> {
    let at96 = BuiltinEncoder::new(EncoderSpec::default(), 96)?;
    let at224 = BuiltinEncoder::new(EncoderSpec::default(), 224)?;
    // Hand count: stem 864 + 64; stage blocks 18,560 + 57,728 + 230,144 + 919,040; embed 65,792.
    assert_eq!(at96.num_params(), 1_292_192);
    assert_eq!(at224.num_params(), 1_292_192);
    // Multiply-accumulates, by hand per conv (output elements × in-channels × k²):
    // 96 px: stem 1,990,656 + stage0 10,616,832 + 3 × 8,257,536 + embed 65,536.
    assert_eq!(at96.flops_per_image(), 37_445_632);
    // 224 px: stem 10,838,016 + stage0 57,802,752 + 3 × 44,957,696 + embed 65,536.
    assert_eq!(at224.flops_per_image(), 203_579_392);
    Ok(())
}

#[test]
fn validation_says_what_is_wrong() {
    let err = BuiltinEncoder::new(EncoderSpec::default(), 31)
        .err()
        .map(|e| e.to_string());
    let msg = err.unwrap_or_default();
    assert!(
        msg.contains("at least 32 px") && msg.contains("31 px"),
        "{msg}"
    );
    assert!(BuiltinEncoder::new(EncoderSpec::default(), 32).is_ok());
    assert_eq!(BuiltinEncoder::min_input_size(&EncoderSpec::default()), 32);

    let cases = [
        (
            EncoderSpec {
                width: 0,
                ..Default::default()
            },
            "`width` must be at least 1, found 0",
        ),
        (
            EncoderSpec {
                embedding_dim: 0,
                ..Default::default()
            },
            "`embedding_dim`",
        ),
        (
            EncoderSpec {
                in_channels: 0,
                ..Default::default()
            },
            "`in_channels`",
        ),
        (
            EncoderSpec {
                stages: vec![],
                ..Default::default()
            },
            "`stages`",
        ),
        (
            EncoderSpec {
                stages: vec![1, 0, 1],
                ..Default::default()
            },
            "0 in stage 1",
        ),
        (
            EncoderSpec {
                width: 1 << 20,
                ..Default::default()
            },
            "channels in the last stage",
        ),
        (
            EncoderSpec {
                grid: 0,
                ..Default::default()
            },
            "`grid` must be between 1 and 16 cells per side, found 0",
        ),
        (
            EncoderSpec {
                grid: 17,
                ..Default::default()
            },
            "found 17",
        ),
    ];
    for (spec, needle) in cases {
        let msg = BuiltinEncoder::new(spec, 224)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
}

#[test]
fn spec_json_uses_defaults_and_refuses_unknown_fields() {
    let spec: Result<EncoderSpec, _> = serde_json::from_str(r#"{"width": 16}"#);
    assert_eq!(
        spec.ok(),
        Some(EncoderSpec {
            width: 16,
            ..Default::default()
        })
    );
    let bad: Result<EncoderSpec, _> = serde_json::from_str(r#"{"widht": 16}"#);
    assert!(bad.is_err());
}

#[test]
fn emitted_model_decodes_with_expected_signature() -> Result<(), ModelError> {
    let encoder = BuiltinEncoder::new(EncoderSpec::default(), 96)?;
    let params = encoder.init_params(7);
    let bytes = encoder.to_onnx(&params)?;
    let model =
        ModelProto::decode(bytes.as_slice()).map_err(|e| ModelError::Decode(e.to_string()))?;
    assert_eq!(model.ir_version, Some(8));
    assert_eq!(model.default_opset(), Some(17));
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.producer_name.as_deref(), Some("sslpipe"));
    let spec_json = model.metadata(SPEC_METADATA_KEY).unwrap_or_default();
    let spec: EncoderSpec =
        serde_json::from_str(spec_json).map_err(|e| ModelError::Decode(e.to_string()))?;
    assert_eq!(&spec, encoder.spec());
    assert_eq!(model.metadata(INPUT_SIZE_METADATA_KEY), Some("96"));

    let graph = model.graph.clone().unwrap_or_default();
    let dims = |v: &onnx::ValueInfoProto| -> Vec<DimValue> {
        v.tensor_type()
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().filter_map(|d| d.value.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name.as_deref(), Some(IMAGES_INPUT));
    assert_eq!(
        dims(&graph.input[0]),
        vec![
            DimValue::DimParam("N".into()),
            DimValue::DimValue(3),
            DimValue::DimValue(96),
            DimValue::DimValue(96)
        ]
    );
    assert_eq!(graph.output.len(), 1);
    assert_eq!(graph.output[0].name.as_deref(), Some(EMBEDDING_OUTPUT));
    assert_eq!(
        dims(&graph.output[0]),
        vec![DimValue::DimParam("N".into()), DimValue::DimValue(256)]
    );
    // Every parameter is an initializer, in model order, with its values.
    let names: Vec<_> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    let expected: Vec<_> = encoder.param_specs().into_iter().map(|p| p.name).collect();
    assert_eq!(names, expected);
    let ops: std::collections::BTreeSet<_> = graph
        .node
        .iter()
        .filter_map(|n| n.op_type.clone())
        .collect();
    let allowed = [
        "Add",
        "BatchNormalization",
        "Conv",
        "Flatten",
        "Gemm",
        "GlobalAveragePool",
        "Identity",
        "MaxPool",
        "Relu",
    ];
    assert!(
        ops.iter().all(|op| allowed.contains(&op.as_str())),
        "{ops:?}"
    );
    assert!(graph.node.iter().all(|n| n.domain.is_none()));

    // Same seed, same bytes; another seed, another model id.
    assert_eq!(bytes, encoder.to_onnx(&encoder.init_params(7))?);
    assert_ne!(
        model_id(&bytes),
        model_id(&encoder.to_onnx(&encoder.init_params(8))?)
    );
    Ok(())
}

#[test]
fn from_onnx_rebuilds_encoder_and_params() -> Result<(), ModelError> {
    let spec = EncoderSpec {
        width: 8,
        stages: vec![2, 1],
        embedding_dim: 16,
        in_channels: 1,
        ..Default::default()
    };
    let encoder = BuiltinEncoder::new(spec, 40)?;
    let params = encoder.init_params(3);
    let (back, back_params) = BuiltinEncoder::from_onnx(&encoder.to_onnx(&params)?)?;
    assert_eq!(back, encoder);
    assert_eq!(back_params, params);
    assert!(matches!(
        BuiltinEncoder::from_onnx(b"not a model"),
        Err(ModelError::Decode(_))
    ));
    Ok(())
}

#[test]
fn to_onnx_refuses_params_that_do_not_fit() -> Result<(), ModelError> {
    let encoder = BuiltinEncoder::new(EncoderSpec::default(), 64)?;
    let other = BuiltinEncoder::new(
        EncoderSpec {
            width: 16,
            ..Default::default()
        },
        64,
    )?;
    let err = encoder
        .to_onnx(&other.init_params(0))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("stem.conv.weight") && err.contains("[32, 3, 3, 3]"),
        "{err}"
    );
    Ok(())
}

/// Pins the initial weights: a change here changes every seeded model users have.
#[test]
fn initial_params_are_pinned() -> Result<(), ModelError> {
    let encoder = BuiltinEncoder::new(EncoderSpec::default(), 96)?;
    let params = encoder.init_params(0);
    assert_eq!(params.digest(), GOLDEN_PARAM_DIGEST);
    Ok(())
}

const GOLDEN_PARAM_DIGEST: &str =
    "beca7d1c4e994937fe7ebce23553d61e4cf9acc2098cd0e28577f83c92762bfb";
