#[path = "../tests/common/npy.rs"]
mod npy;
use clip_es_crf::{Compatibility, PairwiseKernel};
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let id = std::env::args().nth(2).unwrap();
    let image = npy::read(&dir.join(format!("{id}_image.npy")));
    let (h, w) = (image.shape[0], image.shape[1]);
    let img = image.u8s();
    for _ in 0..5 {
        let b = PairwiseKernel::bilateral(w, h, 67.0, 3.0, &img, Compatibility::Potts(4.0)).unwrap();
        std::hint::black_box(b);
    }
}
