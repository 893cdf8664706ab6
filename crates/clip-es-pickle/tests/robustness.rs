//! Bad input must give an error, never a panic, a stack overflow or a huge allocation:
//! every truncation of valid files, random bytes, and random mutations of valid files (whose
//! successful reads are then fully decoded, to exercise the tensor/array bounds checks).

use clip_es_pickle::{parse_npy, unpickle, NpyContent, TorchArchive, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(path).unwrap()
}

fn zip_member(archive: &str, member: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data(archive))).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name(member).unwrap(), &mut out).unwrap();
    out
}

/// The pickle inside a `.npy` object array file.
fn npy_pickle(name: &str) -> Vec<u8> {
    let bytes = data(name);
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..].to_vec()
}

fn pickles() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = (0..=5)
        .map(|p| {
            (
                format!("values_p{p}.pkl"),
                data(&format!("values_p{p}.pkl")),
            )
        })
        .collect();
    out.push((
        "jit data.pkl".into(),
        zip_member("small_jit.pt", "small_jit/data.pkl"),
    ));
    out.push((
        "jit constants.pkl".into(),
        zip_member("small_jit.pt", "small_jit/constants.pkl"),
    ));
    out.push((
        "state_dict data.pkl".into(),
        zip_member("state_dict.pt", "state_dict/data.pkl"),
    ));
    out.push(("cam_dict pickle".into(), npy_pickle("cam_dict.npy")));
    out
}

/// Small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn no_panic<T>(what: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            let hex: String = input.iter().take(400).map(|b| format!("{b:02x}")).collect();
            panic!("{what}: panicked on input ({} bytes) {hex}", input.len());
        }
    }
}

/// Reads an archive fully, including every tensor's data.
fn read_archive_fully(bytes: Vec<u8>) -> Result<usize, clip_es_pickle::PickleError> {
    let tensors = TorchArchive::from_bytes(bytes, "fuzz.pt")?.load_all()?;
    Ok(tensors
        .iter()
        .map(|(_, t)| t.contiguous_le_bytes().len() + t.to_f64_vec().len())
        .sum())
}

fn read_npy_fully(bytes: &[u8]) -> Result<usize, clip_es_pickle::PickleError> {
    Ok(match parse_npy(bytes, "fuzz.npy")? {
        NpyContent::Array(a) => a.to_f64_vec().len(),
        NpyContent::Object { items, .. } => {
            let mut n = 0;
            for item in items {
                n += clip_es_pickle::arrays_from_dict(item, "fuzz.npy")
                    .map(|arrays| arrays.iter().map(|(_, a)| a.to_f64_vec().len()).sum())
                    .unwrap_or(0);
            }
            n
        }
    })
}

#[test]
fn every_truncated_pickle_is_an_error() {
    for (name, bytes) in pickles() {
        assert!(unpickle(&bytes, &name).is_ok(), "{name} itself must parse");
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            let result = no_panic(&name, prefix, || unpickle(prefix, &name));
            let err = result.expect_err(&format!("{name} cut at {cut} parsed"));
            assert!(err.to_string().starts_with(&name), "{err}");
        }
    }
}

#[test]
fn every_truncated_archive_is_an_error() {
    for name in ["state_dict.pt", "state_dict_legacy.pt", "small_jit.pt"] {
        let bytes = data(name);
        assert!(
            read_archive_fully(bytes.clone()).is_ok(),
            "{name} itself must read"
        );
        for cut in 0..bytes.len() {
            let prefix = bytes[..cut].to_vec();
            let result = no_panic(name, &prefix, || read_archive_fully(prefix.clone()));
            assert!(result.is_err(), "{name} cut at {cut} read");
        }
    }
    let err = TorchArchive::from_bytes(data("small_jit.pt")[..5000].to_vec(), "ViT-B-16.pt")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ViT-B-16.pt: truncated or corrupt zip archive"),
        "{err}"
    );
}

#[test]
fn every_truncated_npy_is_an_error() {
    for name in [
        "cam_dict.npy",
        "plain_f16.npy",
        "fortran_f32.npy",
        "big_endian_i4.npy",
        "bool_v3.npy",
        "scalar_f8.npy",
    ] {
        let bytes = data(name);
        assert!(read_npy_fully(&bytes).is_ok(), "{name} itself must read");
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            let result = no_panic(name, prefix, || read_npy_fully(prefix));
            assert!(result.is_err(), "{name} cut at {cut} read");
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    // Mostly opcode bytes, so that streams get past the first few opcodes.
    const OPCODES: &[u8] =
        b"().012FIJKLMNPQRSTUVXabcdegh}ijl]opqrstu)G\x80\x81\x85\x86\x87\x88\x89\x8a\x8b\
BC\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..30_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    OPCODES[rng.below(OPCODES.len())]
                }
            })
            .collect();
        let _ = no_panic("random pickle", &bytes, || unpickle(&bytes, "fuzz.pkl"));
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&bytes);
        let _ = no_panic("random npy", &npy, || read_npy_fully(&npy));
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => {
                out.remove(at);
            }
            1 => out.insert(at, rng.next() as u8),
            // Small integer arguments (lengths, dims, offsets) are where bounds bugs live.
            2 => out[at] = [0, 1, 2, 0x7f, 0x80, 0xff][rng.below(6)],
            _ => out[at] = rng.next() as u8,
        }
    }
    out
}

#[test]
fn mutated_files_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (name, bytes) in pickles() {
        for _ in 0..1500 {
            let m = mutate(&mut rng, &bytes);
            let _ = no_panic(&name, &m, || unpickle(&m, &name));
        }
    }
    // The legacy format has no checksums: mutations reach the tensor table and the storages.
    let legacy = data("state_dict_legacy.pt");
    for _ in 0..3000 {
        let m = mutate(&mut rng, &legacy);
        let _ = no_panic("state_dict_legacy.pt", &m, || read_archive_fully(m.clone()));
    }
    // Changing the argument of a BININT1 keeps the pickle valid but changes sizes, strides,
    // offsets and storage sizes: reads must then either succeed or report the inconsistency.
    let small_ints: Vec<usize> = (1..legacy.len())
        .filter(|&i| legacy[i - 1] == b'K')
        .collect();
    let (mut read_ok, mut out_of_bounds) = (0, 0);
    for _ in 0..3000 {
        let mut m = legacy.clone();
        for _ in 0..1 + rng.below(2) {
            m[small_ints[rng.below(small_ints.len())]] = rng.next() as u8;
        }
        match no_panic("state_dict_legacy.pt", &m, || read_archive_fully(m.clone())) {
            Ok(_) => read_ok += 1,
            Err(e) if e.to_string().contains("exceeds its storage") => out_of_bounds += 1,
            Err(_) => {}
        }
    }
    assert!(
        read_ok > 100 && out_of_bounds > 100,
        "{read_ok} read, {out_of_bounds} out of bounds"
    );
    // Zip archives: mutations hit the central directory, local headers, sizes and CRCs.
    for name in ["state_dict.pt", "small_jit.pt"] {
        let bytes = data(name);
        for _ in 0..300 {
            let m = mutate(&mut rng, &bytes);
            let _ = no_panic(name, &m, || read_archive_fully(m.clone()));
        }
    }
    for name in [
        "cam_dict.npy",
        "fortran_f32.npy",
        "big_endian_i4.npy",
        "bool_v3.npy",
    ] {
        let bytes = data(name);
        for _ in 0..1500 {
            let m = mutate(&mut rng, &bytes);
            let _ = no_panic(name, &m, || read_npy_fully(&m));
        }
    }
}

#[test]
fn deep_nesting_and_shared_blowup_are_bounded() {
    // n nested lists: push n empty lists, then n-1 APPENDs fold them into one chain.
    let nested = |n: usize| {
        let mut p = vec![b']'; n];
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        p
    };
    let mut v = unpickle(&nested(900), "deep.pkl").unwrap();
    let mut depth = 0;
    while let Value::List(mut items) = v {
        depth += 1;
        v = items.pop().unwrap_or(Value::None);
    }
    assert_eq!(depth, 900);
    let err = unpickle(&nested(1100), "deep.pkl").unwrap_err().to_string();
    assert!(err.contains("nesting deeper"), "{err}");

    // Each level is a list holding the previous level twice: 2^60 leaves if expanded.
    let mut p = b"\x80\x02K\x00q\x00".to_vec();
    for i in 0..60u8 {
        p.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', b'q', i + 1, b'0']);
    }
    p.extend_from_slice(&[b'h', 60, b'.']);
    let err = unpickle(&p, "laughs.pkl").unwrap_err().to_string();
    assert!(err.contains("too many values"), "{err}");
}
