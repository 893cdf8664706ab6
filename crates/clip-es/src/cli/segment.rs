//! `clip-es segment`: any photo, with class names typed by the user, a preset's classes, or
//! label-free tags (docs/segment.md). The work is [`clip_es::segment`]'s; this file reads the
//! options, finds the images, loops over them and prints where the results are.

use super::common::{exit_code, report_failures, Bars};
use anyhow::Context;
use clip_es::cam::{Augment, DEFAULT_TEMPLATE};
use clip_es::cams::CamSettings;
use clip_es::classes::ClassSet;
use clip_es::masks::MaskOptions;
use clip_es::progress::Progress;
use clip_es::segment::{
    check_outputs, collect_images, default_vocabulary, parse_classes, preset_classes, tags_json,
    write_outputs, SegmentClass, SegmentOptions, Segmenter, Selection,
};
use clip_es::tags::TagOptions;
use clip_es_model::{Clip, DEFAULT_MODEL};
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
    #[arg(long, default_value = "segments")]
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
    if let Some(t) = args.threads {
        clip_es::progress::check_threads(t).map_err(anyhow::Error::msg)?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("setting up the thread pool")?;
    }
    anyhow::ensure!(
        args.templates.iter().all(|t| t.contains("{}")),
        "every --template must contain {{}}"
    );
    let options = SegmentOptions {
        mask: MaskOptions {
            confidence: args.confidence,
            use_crf: !args.no_crf,
            ..MaskOptions::default()
        },
        tags: TagOptions {
            threshold: args.tag_threshold,
            max_tags: args.max_tags,
            ..TagOptions::default()
        },
    };
    options.validate().map_err(anyhow::Error::msg)?;
    let images = collect_images(&args.inputs)?;

    // Candidates, selection, background words, box threshold.
    let (candidates, selection, mut background, box_threshold) = match &args.dataset {
        Some(spec) => {
            let set = ClassSet::from_spec(spec)?;
            let all = preset_classes(&set).map_err(|e| anyhow::anyhow!("{spec}: {e}"))?;
            let selection = match &args.classes {
                Some(text) => {
                    let chosen = parse_classes(text, Some(&all))?;
                    Selection::Fixed(chosen.iter().map(|c| (c.id - 1) as usize).collect())
                }
                None => Selection::Tags,
            };
            (all, selection, set.background, set.box_threshold)
        }
        None => match &args.classes {
            Some(text) => {
                let chosen = parse_classes(text, None)?;
                let n = chosen.len();
                let bg = ClassSet::coco().background;
                (chosen, Selection::Fixed((0..n).collect()), bg, 0.4)
            }
            None => {
                let set = match &args.vocabulary {
                    Some(p) => ClassSet::from_file(p)?,
                    None => default_vocabulary(),
                };
                let all = preset_classes(&set).map_err(|e| anyhow::anyhow!("vocabulary: {e}"))?;
                (all, Selection::Tags, set.background, set.box_threshold)
            }
        },
    };
    if let Some(bg) = &args.background {
        background = ClassSet::background_from_spec(bg)?;
    }
    // Every output this run may write, checked against the others and the inputs, and the
    // output folder probed, before the model loads.
    let possible: Vec<&SegmentClass> = match &selection {
        Selection::Fixed(c) => c.iter().map(|&i| &candidates[i]).collect(),
        Selection::Tags => candidates.iter().collect(),
    };
    check_outputs(&args.inputs, &images, &args.out, &possible, args.tags_only)?;

    let clip = Clip::load(&args.model)?;
    let weights = clip.files().weights.display().to_string();
    let settings = CamSettings {
        templates: args.templates.clone(),
        augment: Augment {
            scales: args.scales.clone(),
            flip: args.flip,
        },
        memory_limit: args.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
        max_side: args.max_side,
        device: args.device.0,
        ..CamSettings::default()
    };
    let seg = Segmenter::new(
        clip,
        candidates,
        background,
        box_threshold,
        &settings,
        selection,
        options,
    )?;
    eprintln!(
        "model {}; {} images; {}",
        weights,
        images.len(),
        match &seg.selection {
            Selection::Fixed(c) => format!(
                "classes: {}",
                c.iter()
                    .map(|&i| seg.candidates[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Selection::Tags => format!("label-free: tagging from {} classes", seg.candidates.len()),
        }
    );

    let pb = Bars::default();
    if images.len() > 1 {
        pb.start("segment", images.len());
    }
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut all_tags = Vec::new();
    let mut done = 0usize;
    for (path, stem) in &images {
        let result: anyhow::Result<String> = if args.tags_only {
            Segmenter::upright(path)
                .and_then(|(o, d)| seg.tag(&d, path).map(|t| (o, t)))
                .map_err(anyhow::Error::from)
                .map(|(orientation, tags)| {
                    let line = tags
                        .chosen
                        .iter()
                        .map(|&c| format!("{} {:.3}", seg.candidates[c].name, tags.scores[c].score))
                        .collect::<Vec<_>>()
                        .join(", ");
                    all_tags.push(serde_json::json!({
                        "image": path.display().to_string(),
                        "exif_orientation": orientation,
                        "tags": tags_json(&tags, &seg.candidates),
                    }));
                    format!("{}: {line}", path.display())
                })
        } else {
            seg.segment(path)
                .and_then(|r| write_outputs(&seg, &r, &args.out, stem))
                .map_err(anyhow::Error::from)
                .map(|(files, summary)| {
                    let classes = summary["classes"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|c| {
                                    format!(
                                        "{} {:.1}%",
                                        c["name"].as_str().unwrap_or("?"),
                                        100.0 * c["pixel_fraction"].as_f64().unwrap_or(0.0)
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    format!(
                        "{}: {classes}\n  overlay {}\n  mask    {}\n  summary {}\n  heat maps: {}",
                        path.display(),
                        files.overlay.display(),
                        files.mask.display(),
                        files.summary.display(),
                        files
                            .heat_maps
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                })
        };
        match result {
            Ok(text) => {
                done += 1;
                pb.stdout(&text);
            }
            Err(e) => {
                // The error names the photo already; each cause is said once.
                let text = super::common::message(&e);
                pb.message(&format!("skipping: {text}"));
                let name = path.display().to_string();
                let reason = text
                    .strip_prefix(&format!("{name}: "))
                    .unwrap_or(&text)
                    .to_string();
                failures.push((name, reason));
            }
        }
        pb.advance();
    }
    pb.finish();
    if args.tags_only {
        let file = args.out.join("tags.json");
        let text = serde_json::to_string_pretty(&serde_json::json!({ "images": all_tags }))?;
        clip_es::atomic::write_bytes_atomic(&file, text.as_bytes())
            .with_context(|| format!("writing {}", file.display()))?;
        eprintln!("{done} image(s) tagged; tags in {}", file.display());
    } else {
        eprintln!("{done} image(s) segmented into {}", args.out.display());
    }
    Ok(report_failures(&failures))
}
