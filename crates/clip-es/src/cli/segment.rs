//! `clip-es segment`: any photo, with class names typed by the user, a preset's classes, or
//! label-free tags (docs/segment.md). The work is [`clip_es::segment::run`]'s; this file maps
//! the options to its config and prints where the results are.

use super::common::{exit_code, report_failures, Bars};
use clip_es::cams::CamSettings;
use clip_es::gradcam::{Augment, DEFAULT_TEMPLATE};
use clip_es::masks::MaskOptions;
use clip_es::segment::{PhotoResult, SegmentConfig, SegmentOptions, DEFAULT_OUT};
use clip_es::tags::TagOptions;
use clip_es_model::DEFAULT_MODEL;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Photos, or directories whose photos (.jpg .jpeg .png .bmp .gif .tif .tiff .webp; not
    /// recursive) are all segmented
    #[arg(required = true, value_name = "IMAGE|DIR")]
    inputs: Vec<PathBuf>,
    /// Classes to segment, separated by `,`; synonyms of one class by `;`
    /// ("cat,sofa,person with clothes;people"). With --dataset: names of its classes. Without
    /// --classes each photo is tagged first (label-free)
    #[arg(long)]
    classes: Option<String>,
    /// Preset (`voc`, `coco`) or class file: its class names, prompts, synonyms, background
    /// words and label values are used
    #[arg(long)]
    dataset: Option<String>,
    /// Background words: `voc`, `coco`, `none` or a file with one per line (default: the
    /// dataset's, else coco's)
    #[arg(long)]
    background: Option<String>,
    /// Label-free mode: the classes to tag from (class-file format; default: the VOC classes
    /// and the rest of COCO's, or --dataset's classes)
    #[arg(long, conflicts_with_all = ["classes", "dataset"])]
    vocabulary: Option<PathBuf>,
    /// Only tag the photos: print the tags with their scores and write <out>/tags.json
    #[arg(long, conflicts_with = "classes")]
    tags_only: bool,
    /// Label-free mode: keep classes whose score (mean of global probability and share of
    /// patches) reaches this
    #[arg(long, default_value_t = TagOptions::default().threshold)]
    tag_threshold: f32,
    /// Label-free mode: at most this many tags per photo
    #[arg(long, default_value_t = TagOptions::default().max_tags)]
    max_tags: usize,
    /// Output directory
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Skip the CRF: label = argmax of [1 - max CAM, CAMs]
    #[arg(long)]
    no_crf: bool,
    /// Memory limit in MB for one photo (its CAMs, then its CRF, estimated before allocating;
    /// a photo over it fails with a message). Default: the memory available
    #[arg(long)]
    memory_limit: Option<u64>,
    /// Photos whose longer side exceeds this many pixels are downscaled for the ViT (their CAMs
    /// and masks are still at the original size; the shorter side is kept at 224 pixels or
    /// more); 0 never downscales. Same as `clip-es cams --max-side`
    #[arg(long, default_value_t = clip_es::budget::DEFAULT_MAX_SIDE)]
    max_side: usize,
    /// Where the CAMs' image tower and gradients run: cpu (the CPU kernels), flex or vulkan.
    /// Same as `clip-es cams --device`
    #[arg(long, default_value = "cpu", value_parser = super::cams::parse_device)]
    device: super::cams::DeviceArg,
    /// Pixels whose confidence is below this are 255 ("not confident")
    #[arg(long, default_value = "0.95", value_parser = super::masks::parse_threshold)]
    confidence: f32,
    /// Test-time augmentation: scales whose CAMs are averaged (see `clip-es cams --help`)
    #[arg(long, default_value = "1.0", value_parser = Augment::parse_scales)]
    scales: ::std::vec::Vec<f64>,
    /// Test-time augmentation: also the mirrored photo
    #[arg(long)]
    flip: bool,
    /// Prompt template(s), `{}` standing for the class name; several are averaged
    #[arg(long = "template", default_value = DEFAULT_TEMPLATE)]
    templates: Vec<String>,
    /// Model (see `clip-es cams --help`)
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config();
    eprintln!(
        "device: {}",
        clip_es::cams::open_device(config.settings.device)?
    );
    let report = clip_es::segment::run(&config, &Bars::default())?;
    for result in &report.results {
        println!("{}", describe(result));
    }
    match &report.tags_file {
        Some(file) => eprintln!(
            "{} image(s) tagged; tags in {}",
            report.results.len(),
            file.display()
        ),
        None => eprintln!(
            "{} image(s) segmented into {}",
            report.results.len(),
            config.out.display()
        ),
    }
    Ok(report_failures(&report.failures))
}

impl Args {
    /// The stage's configuration for these options.
    fn config(self) -> SegmentConfig {
        SegmentConfig {
            inputs: self.inputs,
            classes: self.classes,
            dataset: self.dataset,
            background: self.background,
            vocabulary: self.vocabulary,
            tags_only: self.tags_only,
            options: SegmentOptions {
                mask: MaskOptions {
                    confidence: self.confidence,
                    use_crf: !self.no_crf,
                    ..MaskOptions::default()
                },
                tags: TagOptions {
                    threshold: self.tag_threshold,
                    max_tags: self.max_tags,
                    ..TagOptions::default()
                },
            },
            settings: CamSettings {
                templates: self.templates,
                augment: Augment {
                    scales: self.scales,
                    flip: self.flip,
                },
                memory_limit: self.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
                max_side: self.max_side,
                device: self.device.0,
                ..CamSettings::default()
            },
            out: self.out,
            model: self.model,
            threads: self.threads,
        }
    }
}

/// One photo's result as the command prints it: its tags, or its classes and files.
fn describe(result: &PhotoResult) -> String {
    let percent = |c: &serde_json::Value| {
        format!(
            "{} {:.1}%",
            c["name"].as_str().unwrap_or("?"),
            100.0 * c["pixel_fraction"].as_f64().unwrap_or(0.0)
        )
    };
    match result {
        PhotoResult::Tagged { path, tags } => {
            let line: Vec<String> = tags.iter().map(|(n, s)| format!("{n} {s:.3}")).collect();
            format!("{}: {}", path.display(), line.join(", "))
        }
        PhotoResult::Segmented {
            path,
            files,
            summary,
        } => {
            let classes = summary["classes"]
                .as_array()
                .map(|a| a.iter().map(percent).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let heat_maps: Vec<String> = files
                .heat_maps
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "{}: {classes}\n  overlay {}\n  mask    {}\n  summary {}\n  heat maps: {}",
                path.display(),
                files.overlay.display(),
                files.mask.display(),
                files.summary.display(),
                heat_maps.join(" ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Without options, the command's configuration is the library's
    /// ([`SegmentConfig::new`]).
    #[test]
    fn parsed_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["segment", "photo.jpg"]).unwrap();
        let library = SegmentConfig::new(vec!["photo.jpg".into()]);
        assert_eq!(format!("{:?}", cli.args.config()), format!("{library:?}"));
    }
}
