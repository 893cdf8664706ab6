//! Reads the fixtures written by `tools/golden_pickle.py` (PyTorch 2 / numpy 2) and compares
//! every tensor and array, byte for byte and value by value, with what Python read back.

use clip_es_pickle::{
    read_npy, read_npy_dict, read_torch_archive, unpickle, NpyContent, TorchArchive, TorchTensor,
    Value,
};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn expected(file: &str) -> Vec<Json> {
    let text = std::fs::read_to_string(data("expected.json")).unwrap();
    let all: Json = serde_json::from_str(&text).unwrap();
    all[file].as_array().unwrap().clone()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn usizes(v: &Json) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect()
}

/// Compares one tensor with its expected entry: dtype, shape, layout, bytes, values.
fn check_tensor(file: &str, entry: &Json, tensor: &TorchTensor, check_layout: bool) {
    let name = entry["name"].as_str().unwrap();
    let ctx = format!("{file}: {name}");
    assert_eq!(
        tensor.dtype.name(),
        entry["dtype"].as_str().unwrap(),
        "{ctx}"
    );
    assert_eq!(tensor.shape, usizes(&entry["shape"]), "{ctx}");
    if check_layout {
        assert_eq!(tensor.strides, usizes(&entry["strides"]), "{ctx}");
        assert_eq!(
            tensor.storage_offset,
            entry["offset"].as_u64().unwrap() as usize,
            "{ctx}"
        );
    }
    assert_eq!(
        hex(&tensor.contiguous_le_bytes()),
        entry["hex"].as_str().unwrap(),
        "{ctx}"
    );
    assert_eq!(tensor.to_f64_vec(), floats(&entry["values"]), "{ctx}");
    assert_eq!(
        tensor.to_ndarray().data,
        tensor.contiguous_le_bytes().into_owned(),
        "{ctx}"
    );
}

fn check_state_dict(file: &str) {
    let tensors = read_torch_archive(&data(file)).unwrap();
    let want = expected(file);
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "{file}: names in state-dict order");
    for ((_, tensor), entry) in tensors.iter().zip(&want) {
        check_tensor(file, entry, tensor, true);
    }
    let by_name: HashMap<&str, &TorchTensor> =
        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Views of one storage share its bytes instead of copying them.
    assert!(Arc::ptr_eq(
        &by_name["view_a"].storage,
        &by_name["view_b"].storage
    ));
    assert!(!by_name["transposed"].is_contiguous());
    assert!(by_name["view_a"].is_contiguous());
    assert_eq!(
        by_name["i64"].to_i64_vec().unwrap(),
        vec![-5, 0, 1 << 40, 7]
    );
    assert!(by_name["f32"].to_i64_vec().is_err());
    let f16 = by_name["f16"].to_f16_vec().unwrap();
    assert_eq!(
        f16.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
        by_name["f16"].to_f32_vec()
    );
}

#[test]
fn zip_state_dict_every_dtype_and_layout() {
    check_state_dict("state_dict.pt");
}

#[test]
fn legacy_state_dict() {
    check_state_dict("state_dict_legacy.pt");
}

#[test]
fn torchscript_module_tree() {
    let file = "small_jit.pt";
    let tensors = read_torch_archive(&data(file)).unwrap();
    let want = expected(file);
    let mut got: HashMap<&str, &TorchTensor> = HashMap::new();
    for (name, tensor) in &tensors {
        assert!(got.insert(name.as_str(), tensor).is_none(), "{name} twice");
    }
    assert_eq!(got.len(), want.len(), "{file}: tensor count");
    for entry in &want {
        let name = entry["name"].as_str().unwrap();
        let tensor = got
            .get(name)
            .unwrap_or_else(|| panic!("{file}: {name} missing"));
        // TorchScript's state_dict() may re-stride nothing, but layout is not part of the
        // contract here: compare dtype, shape and data.
        check_tensor(file, entry, tensor, false);
    }
}

#[test]
fn lazy_archive_access() {
    let mut archive = TorchArchive::open(&data("state_dict.pt")).unwrap();
    let infos = archive.tensor_infos().to_vec();
    assert_eq!(infos.len(), expected("state_dict.pt").len());
    let (name, info) = &infos[0];
    let tensor = archive.load(name).unwrap();
    assert_eq!((tensor.dtype, &tensor.shape), (info.dtype, &info.shape));
    let a = archive.load("view_a").unwrap();
    let b = archive.load("view_b").unwrap();
    assert!(Arc::ptr_eq(&a.storage, &b.storage));
    let err = archive.load("nope").unwrap_err().to_string();
    assert!(
        err.ends_with("/state_dict.pt: no tensor named \"nope\""),
        "{err}"
    );
}

#[test]
fn reference_cam_dict_npy() {
    let file = "cam_dict.npy";
    let arrays = read_npy_dict(&data(file)).unwrap();
    let want = expected(file);
    assert_eq!(arrays.len(), want.len());
    for ((name, array), entry) in arrays.iter().zip(&want) {
        assert_eq!(name, entry["name"].as_str().unwrap());
        assert_eq!(
            array.dtype.name(),
            entry["dtype"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(array.shape, usizes(&entry["shape"]), "{name}");
        assert_eq!(hex(&array.data), entry["hex"].as_str().unwrap(), "{name}");
        assert_eq!(array.to_f64_vec(), floats(&entry["values"]), "{name}");
    }
    assert_eq!(arrays[0].1.to_i64_vec().unwrap(), vec![3, 14]);
    let f16: Vec<f32> = arrays[1]
        .1
        .to_f16_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    assert_eq!(f16, arrays[1].1.to_f32_vec());
    // The raw object form: a 0-d object array holding the dict.
    let NpyContent::Object { shape, items } = read_npy(&data(file)).unwrap() else {
        panic!("object array expected")
    };
    assert!(shape.is_empty() && items.len() == 1 && items[0].dict_get("keys").is_some());
}

#[test]
fn plain_npy_files() {
    for file in [
        "plain_f16.npy",
        "fortran_f32.npy",
        "big_endian_i4.npy",
        "bool_v3.npy",
        "scalar_f8.npy",
    ] {
        let NpyContent::Array(array) = read_npy(&data(file)).unwrap() else {
            panic!("{file}: numeric array expected")
        };
        let entry = &expected(file)[0];
        assert_eq!(
            array.dtype.name(),
            entry["dtype"].as_str().unwrap(),
            "{file}"
        );
        assert_eq!(array.shape, usizes(&entry["shape"]), "{file}");
        assert_eq!(hex(&array.data), entry["hex"].as_str().unwrap(), "{file}");
        assert_eq!(array.to_f64_vec(), floats(&entry["values"]), "{file}");
    }
    let err = read_npy_dict(&data("plain_f16.npy"))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("plain_f16.npy: plain f16 array, expected a pickled dict of arrays"),
        "{err}"
    );
}

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

fn ints(values: &[i64]) -> Vec<Value> {
    values.iter().map(|&v| Value::Int(v)).collect()
}

/// The object `python_values()` in tools/golden_pickle.py, as the VM should rebuild it.
fn python_values() -> Value {
    Value::Dict(vec![
        (s("none"), Value::None),
        (s("true"), Value::Bool(true)),
        (s("false"), Value::Bool(false)),
        (s("small"), Value::Int(7)),
        (s("neg"), Value::Int(-3)),
        (s("i32min"), Value::Int(-(1 << 31))),
        (s("i62"), Value::Int(1 << 62)),
        (s("big"), Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])),
        (
            s("negbig"),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        ),
        (s("float"), Value::Float(1.5)),
        (s("negfloat"), Value::Float(-2.25e-3)),
        (s("str"), s("h\u{e9}llo \u{20ac} \\ \n end")),
        (s("bytes"), Value::Bytes(vec![0, 0xff, b'a', b'b'])),
        (s("empty_bytes"), Value::Bytes(vec![])),
        (s("tuple0"), Value::Tuple(vec![])),
        (s("tuple1"), Value::Tuple(ints(&[1]))),
        (s("tuple2"), Value::Tuple(vec![Value::Int(1), s("a")])),
        (s("tuple3"), Value::Tuple(ints(&[1, 2, 3]))),
        (s("tuple4"), Value::Tuple(ints(&[1, 2, 3, 4]))),
        (
            s("list"),
            Value::List(vec![
                Value::Int(1),
                Value::List(ints(&[2, 3])),
                Value::Dict(vec![]),
            ]),
        ),
        (
            s("nested"),
            Value::Dict(vec![(
                s("a"),
                Value::Dict(vec![(s("b"), Value::List(vec![Value::None]))]),
            )]),
        ),
        (s("set"), Value::Set(ints(&[3]))),
        (s("frozenset"), Value::Set(ints(&[4]))),
        (
            s("shared"),
            Value::Tuple(vec![Value::List(ints(&[1, 2])), Value::List(ints(&[1, 2]))]),
        ),
        (
            s("od"),
            Value::Dict(vec![(s("x"), Value::Int(1)), (s("y"), Value::Int(2))]),
        ),
        (
            s("intkey"),
            Value::Dict(vec![
                (Value::Int(1), s("one")),
                (Value::Tuple(ints(&[2, 3])), s("tuple-key")),
            ]),
        ),
        (s("bytearray"), Value::Bytes(b"xy".to_vec())),
    ])
}

#[test]
fn every_pickle_protocol() {
    let want = python_values();
    for proto in 0..=5 {
        let name = format!("values_p{proto}.pkl");
        let bytes = std::fs::read(data(&name)).unwrap();
        let got = unpickle(&bytes, &name).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn torchscript_constants_and_data_pickles_parse() {
    let bytes = std::fs::read(data("small_jit.pt")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    for name in ["small_jit/data.pkl", "small_jit/constants.pkl"] {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(name).unwrap(), &mut raw).unwrap();
        let value = unpickle(&raw, name).unwrap();
        match name {
            // The root module object of the traced Net.
            "small_jit/data.pkl" => {
                let root = value.as_object().expect("module object");
                let (module, _) = root.callable_global().unwrap();
                assert!(module.starts_with("__torch__"), "{module}");
                assert!(root.state.as_ref().unwrap().dict_get("training").is_some());
            }
            _ => assert!(value.as_seq().is_some(), "constants.pkl holds a tuple"),
        }
    }
}

#[test]
fn encoded_npy_files_read_back_and_match_numpy() {
    use clip_es_pickle::{
        arrays_from_dict, encode_npy, encode_npy_dict, parse_npy, DType, NdArray,
    };
    // A C-order little-endian array encodes to exactly the bytes np.save wrote.
    for file in ["plain_f16.npy", "scalar_f8.npy"] {
        let original = std::fs::read(data(file)).unwrap();
        let NpyContent::Array(array) = parse_npy(&original, file).unwrap() else {
            panic!()
        };
        assert_eq!(encode_npy(&array).unwrap(), original, "{file}");
    }
    for file in ["fortran_f32.npy", "big_endian_i4.npy", "bool_v3.npy"] {
        let NpyContent::Array(array) = read_npy(&data(file)).unwrap() else {
            panic!()
        };
        let encoded = encode_npy(&array).unwrap();
        assert_eq!(
            parse_npy(&encoded, file).unwrap(),
            NpyContent::Array(array),
            "{file}"
        );
    }
    // The reference's CAM dict: same header as numpy's, same arrays after a round trip.
    let original = std::fs::read(data("cam_dict.npy")).unwrap();
    let arrays = read_npy_dict(&data("cam_dict.npy")).unwrap();
    let encoded = encode_npy_dict(&arrays).unwrap();
    assert_eq!(encoded[..128], original[..128], "header");
    let NpyContent::Object { shape, mut items } = parse_npy(&encoded, "rt.npy").unwrap() else {
        panic!("object array expected")
    };
    assert!(shape.is_empty() && items.len() == 1);
    assert_eq!(
        arrays_from_dict(items.pop().unwrap(), "rt.npy").unwrap(),
        arrays
    );
    // numpy has no bfloat16, and data must match the shape.
    let bf16 = NdArray {
        dtype: DType::BF16,
        shape: vec![1],
        data: vec![0, 0],
    };
    assert!(encode_npy(&bf16).is_err());
    let short = NdArray {
        dtype: DType::F32,
        shape: vec![2],
        data: vec![0; 4],
    };
    assert!(encode_npy_dict(&[("x".into(), short)]).is_err());
}
