//! torchvision ImageNet ResNet weights (`resnet101-*.pth`) as the initialisation of DeepLab-v2's
//! [`Backbone::Torchvision`](crate::deeplab::Backbone) backbone: the layout is detected from the
//! keys, the names are mapped to ours by a table, and torchvision's input normalisation is
//! folded into the stem so the network takes our input unchanged (BGR, 0..255, minus the Caffe
//! mean [`MEAN_BGR`]).
//!
//! The fold: torchvision feeds `x_c = (rgb_c / 255 - mean_c) / std_c`; ours is `y_b = bgr_b -
//! MEAN_BGR_b`, so with `c = 2 - b`, `x_c = y_b / (255 std_c) + (MEAN_BGR_b / 255 - mean_c) /
//! std_c`. The stem conv's input channels are reversed and scaled by `1 / (255 std_c)`, and the
//! constant `offset_o = sum_{c,kh,kw} W[o,c,kh,kw] (MEAN_BGR_{2-c} / 255 - mean_c) / std_c` goes
//! into the stem BN as `running_mean -= offset`. Exact except at the border: our zero padding of
//! the 7x7 conv is the Caffe mean colour where torchvision's is its own mean colour, which changes
//! the outermost one or two stem output rows and columns and, through the receptive field, the
//! features near the image border (docs/training.md gives the measured effect).

use crate::data::MEAN_BGR;
use crate::params::HostTensor;
use std::collections::BTreeMap;

/// torchvision's ImageNet normalisation (RGB, on 0..1 pixels).
pub const MEAN_RGB: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD_RGB: [f32; 3] = [0.229, 0.224, 0.225];

/// Whether a state dict (key names, prefixes already stripped) is a torchvision ResNet.
pub fn is_torchvision<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.any(|k| k == "layer1.0.conv1.weight")
}

/// Module renames, torchvision -> ours, applied to the key prefix before `.weight`, `.bias`,
/// `.running_mean`, `.running_var`. Stage and block numbers shift separately: torchvision's
/// `layer{s}.{i}` is our `layer{s+1}.block{i+1}`.
const BLOCK_TABLE: [(&str, &str); 8] = [
    ("conv1", "reduce.conv"),
    ("bn1", "reduce.bn"),
    ("conv2", "conv3x3.conv"),
    ("bn2", "conv3x3.bn"),
    ("conv3", "increase.conv"),
    ("bn3", "increase.bn"),
    ("downsample.0", "shortcut.conv"),
    ("downsample.1", "shortcut.bn"),
];
const STEM_TABLE: [(&str, &str); 2] = [("conv1", "layer1.conv1.conv"), ("bn1", "layer1.conv1.bn")];

/// Our name of a torchvision key, `None` for keys we do not use (`fc.*`, anything unknown).
pub fn our_name(key: &str) -> Option<String> {
    let (module, leaf) = key.rsplit_once('.')?;
    if let Some((_, ours)) = STEM_TABLE.iter().find(|(tv, _)| *tv == module) {
        return Some(format!("{ours}.{leaf}"));
    }
    let rest = module.strip_prefix("layer")?;
    let (stage, rest) = rest.split_once('.')?;
    let (block, sub) = rest.split_once('.')?;
    let stage: usize = stage.parse().ok()?;
    let block: usize = block.parse().ok()?;
    if !(1..=4).contains(&stage) {
        return None;
    }
    let (_, ours) = BLOCK_TABLE.iter().find(|(tv, _)| *tv == sub)?;
    Some(format!(
        "layer{}.block{}.{ours}.{leaf}",
        stage + 1,
        block + 1
    ))
}

/// Renames a torchvision state dict to our names and folds torchvision's input normalisation
/// into the stem. Keys without a name of ours keep theirs (the loader reports them unused).
/// Errors (a message) if the stem tensors are missing or misshapen.
pub fn convert(
    tensors: BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let mut out: BTreeMap<String, HostTensor> = tensors
        .into_iter()
        .map(|(k, t)| (our_name(&k).unwrap_or(k), t))
        .collect();
    let w = out
        .get("layer1.conv1.conv.weight")
        .ok_or("no stem conv (conv1.weight)")?;
    let [cout, 3, kh, kw] = w.shape[..] else {
        return Err(format!(
            "conv1.weight: shape {:?}, expected [C, 3, kh, kw]",
            w.shape
        ));
    };
    let k = kh * kw;
    let mut folded = vec![0f32; w.data.len()];
    let mut offset = vec![0f64; cout];
    for o in 0..cout {
        for c in 0..3 {
            let b = 2 - c;
            let shift = (MEAN_BGR[b] as f64 / 255.0 - MEAN_RGB[c] as f64) / STD_RGB[c] as f64;
            let scale = 1.0 / (255.0 * STD_RGB[c] as f64);
            for i in 0..k {
                let v = w.data[(o * 3 + c) * k + i] as f64;
                folded[(o * 3 + b) * k + i] = (v * scale) as f32;
                offset[o] += v * shift;
            }
        }
    }
    let folded = HostTensor::new(w.shape.clone(), folded);
    out.insert("layer1.conv1.conv.weight".into(), folded);
    let rm = out
        .get_mut("layer1.conv1.bn.running_mean")
        .ok_or("no stem BN statistics (bn1.running_mean)")?;
    if rm.data.len() != cout {
        return Err(format!(
            "bn1.running_mean: {} values for {cout} stem channels",
            rm.data.len()
        ));
    }
    for (m, off) in rm.data.iter_mut().zip(&offset) {
        *m = (*m as f64 - off) as f32;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_table() {
        let cases = [
            ("conv1.weight", Some("layer1.conv1.conv.weight")),
            ("bn1.running_var", Some("layer1.conv1.bn.running_var")),
            (
                "layer1.0.conv1.weight",
                Some("layer2.block1.reduce.conv.weight"),
            ),
            ("layer3.22.bn2.bias", Some("layer4.block23.conv3x3.bn.bias")),
            (
                "layer4.2.conv3.weight",
                Some("layer5.block3.increase.conv.weight"),
            ),
            (
                "layer2.0.downsample.1.running_mean",
                Some("layer3.block1.shortcut.bn.running_mean"),
            ),
            (
                "layer2.0.downsample.0.weight",
                Some("layer3.block1.shortcut.conv.weight"),
            ),
            ("fc.weight", None),
            ("layer5.0.conv1.weight", None),
            ("layer1.0.conv9.weight", None),
        ];
        for (tv, ours) in cases {
            assert_eq!(our_name(tv).as_deref(), ours, "{tv}");
        }
    }

    #[test]
    fn the_fold_reverses_channels_and_moves_the_mean_into_the_bn() {
        // One output channel, a 1x1 kernel: W = [1, 2, 3] on RGB.
        let mut t = BTreeMap::new();
        t.insert(
            "conv1.weight".to_string(),
            HostTensor::new(vec![1, 3, 1, 1], vec![1.0, 2.0, 3.0]),
        );
        t.insert(
            "bn1.running_mean".to_string(),
            HostTensor::new(vec![1], vec![0.5]),
        );
        let out = convert(t).unwrap();
        let w = &out["layer1.conv1.conv.weight"].data;
        // BGR order: blue (RGB index 2) first.
        assert!((w[0] - 3.0 / (255.0 * STD_RGB[2])).abs() < 1e-7);
        assert!((w[2] - 1.0 / (255.0 * STD_RGB[0])).abs() < 1e-7);
        // A pixel of raw RGB (r, g, b): torchvision's conv vs ours plus the offset.
        let rgb = [200.0f32, 30.0, 90.0];
        let tv: f32 = (0..3)
            .map(|c| [1.0, 2.0, 3.0][c] * (rgb[c] / 255.0 - MEAN_RGB[c]) / STD_RGB[c])
            .sum();
        let ours: f32 = (0..3).map(|b| w[b] * (rgb[2 - b] - MEAN_BGR[b])).sum();
        let rm = out["layer1.conv1.bn.running_mean"].data[0];
        assert!(((ours - rm) - (tv - 0.5)).abs() < 1e-4, "{ours} {rm} {tv}");
    }
}
